"""Data: load a data set by name, split it (stratified), normalize from the training split only, augment."""
