"""jvlm.serve"""
