"""jvlm.train"""
