"""Lightning callbacks of a training run, one module per concern; configs pick them (``conf/callbacks/``)."""
