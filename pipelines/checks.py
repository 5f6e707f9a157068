"""Checks made before a run is submitted: mistakes a worker would otherwise find minutes later, or
never (a relative path means another directory on a remote worker), each told in one line.
"""
import os

from apache_beam.io.filesystems import FileSystems

from connector.beam.credentials import FileCredentials

# Options naming local files or prefixes, which the workers open: made absolute before submitting.
PATH_OPTIONS = ("credentials", "ca_file", "dead_letter", "avro_schema", "device_map", "plan_output")


class UsageError(Exception):
    """A mistake in the command line or in the files it names; its message is one line for the user."""


def absolute(path):
    """A local path as an absolute one (workers may run elsewhere); other filesystems' paths unchanged."""
    return path if "://" in path else os.path.abspath(path)


def make_paths_absolute(args):
    for name in PATH_OPTIONS:
        if getattr(args, name, None):
            setattr(args, name, absolute(getattr(args, name)))
    if getattr(args, "input", None):
        args.input = [absolute(pattern) for pattern in args.input]


def check_endpoint(endpoint):
    if not endpoint.startswith("https://"):
        raise UsageError(f"--endpoint must start with https:// (the platform speaks HTTPS only): {endpoint}")


def check_credentials(path):
    """Reads the file as the workers will, so that its mistakes show now; keeps none of its secrets."""
    if not FileSystems.exists(path):
        raise UsageError(f"--credentials {path}: no such file")
    try:
        devices = len(FileCredentials(path).secrets())
    except ValueError as error:  # the parser's messages name the file and row, never a secret; JSON's don't
        message = str(error) if str(error).startswith(path) else f"{path}: {error}"
        raise UsageError(f"--credentials {message}") from error
    if not devices:
        raise UsageError(f"--credentials {path}: lists no device (a CSV file: the header line "
                         "productKey,deviceName,deviceSecret, then a line per device)")


def check_inputs(patterns):
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except OSError:  # some filesystems refuse a path that does not exist instead of matching nothing
            matched = []
        if not matched:
            raise UsageError(f"--input {pattern} matches no file")


def check(args):
    """All of the above, for the options given."""
    make_paths_absolute(args)
    if args.endpoint:
        check_endpoint(args.endpoint)
    if args.credentials:
        check_credentials(args.credentials)
    check_inputs(getattr(args, "input", None) or [])
