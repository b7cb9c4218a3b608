"""Reading labelled tables, splitting them, and the tf.data pipeline that feeds training."""
