import LapseGraph
