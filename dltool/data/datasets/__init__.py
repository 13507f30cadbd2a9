"""Data set loaders, one module per family; dltool.catalog.DATASETS names them ("module:function"), so a
module (and torchvision with it) is imported only when one of its data sets is loaded."""
