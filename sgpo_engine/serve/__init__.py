"""`sgpo serve`, an OpenAI-compatible HTTP server: see http.py."""
from .http import APIError, Batcher, Server, add_parser, main, output_options, sampling_params

__all__ = ["APIError", "Batcher", "Server", "add_parser", "main", "output_options", "sampling_params"]
