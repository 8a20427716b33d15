"""jvlm.inference"""
