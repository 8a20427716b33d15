"""jvlm.data"""
