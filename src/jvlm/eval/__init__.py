"""jvlm.eval"""
