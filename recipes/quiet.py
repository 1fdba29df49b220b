"""Keep TensorFlow's start-up logging out of a command-line user's terminal."""

import logging
import os
import sys
import warnings


def quiet_tensorflow():
    """Import TensorFlow without its start-up log lines, and silence its Python loggers.

    TensorFlow 2.21's C++ start-up messages (oneDNN, CUDA drivers) go through absl before
    `TF_CPP_MIN_LOG_LEVEL` is read, so they are hidden by pointing file descriptor 2 at
    /dev/null while `tensorflow` is imported. A user who sets `TF_CPP_MIN_LOG_LEVEL` themselves
    gets the plain import and every message.
    """
    user_chose_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "tensorflow" not in sys.modules and not user_chose_level:
        _import_with_stderr_closed("tensorflow")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _import_with_stderr_closed(module_name):
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        __import__(module_name)
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
