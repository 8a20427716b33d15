"""Image and text processing: everything between a user's input and token ids."""
