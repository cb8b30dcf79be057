import LapseGraph

