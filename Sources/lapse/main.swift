import LapseCLI
