"""sercli: speech emotion recognition for folders of recorded speech."""
__version__ = "0.1.0"
