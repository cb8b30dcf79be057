import LapseTensor

