"""Which errors are the command's fault: those raised while checking the command as given become usage errors
(exit status 2), the rest stay runtime errors (1); and a parser whose errors suggest the spelling meant."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from zofo.errors import UsageError, ZofoError


@contextmanager
def usage_errors() -> Iterator[None]:
    """Errors in the command as given (flags, config values, the run folder) are usage errors: exit status 2."""
    try:
        yield
    except UsageError:
        raise
    except ZofoError as err:
        raise UsageError(err.what, err.fix, err.key) from err


def check_output_file(path: str | None, flag: str, suffixes: tuple[str, ...],
                      replaces: Callable[[Path], bool] = lambda file: True) -> None:
    """Refuse, before any work, an output file's path that names a folder (a run's results were lost to it at the
    end), that does not end in one of ``suffixes`` (what the command writes), or that names an existing file which
    ``replaces`` says the command must not write over (an earlier result of its own it may); a missing parent folder
    is created where the file is written."""
    if path is None:
        return
    file = Path(path)
    if file.is_dir():
        raise ZofoError(f"{flag} {path} is a folder", f"give the file's path, e.g. {file / ('out' + suffixes[0])}")
    if file.suffix.lower() not in suffixes:
        raise ZofoError(f"{flag} {path}: the command writes a {' or '.join(suffixes)} file",
                        f"give a path ending in {suffixes[0]}, e.g. {file.with_suffix(suffixes[0])}")
    if file.exists() and not replaces(file):
        raise ZofoError(f"{flag} {path} exists and is not an earlier result of this command",
                        "give a new path, or move the file away first")


def check_device_flag(device: str | None, dtype: str = "float32") -> None:
    """Refuse an unknown or absent ``--device`` (None: auto), or a ``--dtype`` it cannot compute in, before anything
    loads (`zofo eval`, `zofo meta-test`, `zofo replay`)."""
    from zofo.models.device import resolve_device  # torch: only once a command runs
    from zofo.models.load import check_device_dtype, resolve_dtype

    check_device_dtype(resolve_device(device or "auto"), resolve_dtype(dtype), computes=False)


def check_dtype_flag(dtype: str) -> None:
    """Refuse an unknown ``--dtype`` before anything loads (`zofo eval`, `zofo convert`)."""
    from zofo.models.load import DTYPES  # torch: only once a command runs

    if dtype not in DTYPES:
        raise ZofoError(f"unknown --dtype {dtype!r}", f"use one of: {', '.join(DTYPES)}")


class Parser(argparse.ArgumentParser):
    """argparse's parser; a mistyped command or flag is answered with the closest valid one (``--stpes``: did you
    mean --steps?)."""

    #: a negative number as argparse reads it (-3, -.5), and in scientific notation (-1e-3), which it took for a flag
    #: ("--eps: expected one argument"); no zofo flag looks like a number, so a value may always be negative
    NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER

    def parse_known_args(self, args=None, namespace=None):
        self.given = list(sys.argv[1:] if args is None else args)  # what `error` reads when argparse names no flag
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        super().error(message + closest_spelling(self, message, getattr(self, "given", [])))


def closest_spelling(parser: argparse.ArgumentParser, message: str, given: list[str] = ()) -> str:
    """'; did you mean X?' for an unknown command or flag named in argparse's `message`, or ''. A missing required
    flag is reported before any unknown one, so there the unknown flags are read from ``given`` (the arguments)."""
    choice = re.search(r"invalid choice: '([^']*)'", message)
    if choice:  # the valid ones from the parser: how argparse quotes them in its message changed in Python 3.12.8
        return _meant(choice.group(1), [str(c) for action in parser._actions for c in action.choices or ()])
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        flags = [word.split("=")[0] for word in unknown.group(1).split() if word.startswith("--")]
        known = [option for action in parser._actions for option in action.option_strings]
        return "".join(_meant(flag, known) for flag in flags[:1])
    if message.startswith("the following arguments are required"):
        known = [option for action in parser._actions for option in action.option_strings]
        flags = [word.split("=")[0] for word in given if word.startswith("--")]
        unknown = [flag for flag in flags if not any(option.startswith(flag) for option in known)]  # abbreviations
        guess = _meant(unknown[0], known) if unknown else ""
        return f" ({unknown[0]} is not a flag of {parser.prog}{guess})" if unknown else ""
    return ""


def _meant(word: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(word, valid, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""
