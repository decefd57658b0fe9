"""The binaries, installed as a package so that the console commands (savae_tf.commands) can run them."""
