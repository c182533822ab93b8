"""The models a user can name: the shipped default, installed models, musicnn's import and
its TensorFlow checkpoint reader, calibration and quantisation."""
