"""The interactive translator of ``nmt-translate`` (stdin a terminal, no input given).

A ``> `` prompt; each line typed is translated at once and answered with the n-best list
(``rank  score  text``) and, with alignments on, the best hypothesis's attention as a
character heatmap (:func:`nmt.viz.ascii_heatmap`, words). Lines starting with ``:`` are
commands that change the settings for the following sentences (see :data:`HELP`).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import IO, Callable, Optional

from nmt.cli.translate_engines import DecodeSettings
from nmt.cli.translate_io import clean_line

HELP = """commands:
  :beam N        beam size (the search uses at least nbest)
  :nbest N       hypotheses printed per sentence
  :lp X          length penalty alpha (GNMT, Wu et al. 2016); :lp default = the model's
  :align on|off  draw the best hypothesis's attention as a character heatmap
  :show          the current settings
  :help          this text
  :quit          leave (Ctrl-D too)"""


class CommandError(ValueError):
    """A command the REPL cannot apply (unknown name or a bad value)."""


def apply_command(line: str, settings: DecodeSettings, alignment_ok: bool = True) -> Optional[DecodeSettings]:
    """The settings after command ``line`` (``:beam 5`` ...); None for ``:quit``.

    Raises:
        CommandError: an unknown command or a bad value, with a message for the user.
    """
    name, _, arg = line[1:].strip().partition(" ")
    arg = arg.strip()
    if name in ("quit", "q", "exit"):
        return None
    if name in ("beam", "nbest"):
        value = _positive_int(name, arg)
        return replace(settings, beam_size=value) if name == "beam" else replace(settings, nbest=value)
    if name == "lp":
        if arg == "default":
            return replace(settings, length_penalty=None)
        try:
            return replace(settings, length_penalty=float(arg))
        except ValueError:
            raise CommandError(f":lp needs a number (e.g. :lp 1.0) or 'default', got {arg!r}") from None
    if name == "align":
        if arg not in ("on", "off"):
            raise CommandError(f":align needs on or off, got {arg!r}")
        if arg == "on" and not alignment_ok:
            raise CommandError("this engine gives no attention (alignments need engine=torch)")
        return replace(settings, alignment=arg == "on")
    if name in ("help", "show", "h", "?"):
        return settings
    raise CommandError(f"unknown command :{name}; :help lists the commands")


def _positive_int(name: str, arg: str) -> int:
    try:
        value = int(arg)
    except ValueError:
        raise CommandError(f":{name} needs a whole number (e.g. :{name} 5), got {arg!r}") from None
    if value < 1:
        raise CommandError(f":{name} must be at least 1, got {value}")
    return value


def describe(settings: DecodeSettings) -> str:
    """``beam=5 nbest=1 lp=default align=on``."""
    lp = "default" if settings.length_penalty is None else f"{settings.length_penalty:g}"
    return (f"beam={settings.beam_size} nbest={settings.nbest} lp={lp} "
            f"align={'on' if settings.alignment else 'off'}")


def run_interactive(engine, settings: DecodeSettings, stdin: IO[str], stdout: IO[str], prompt: str = "> ") -> int:
    """Read lines from ``stdin`` until ``:quit`` or end of input, answering on ``stdout``.

    Args:
        engine: a :mod:`nmt.cli.translate_engines` engine (``translate``, ``heatmap``,
            ``supports_alignment``).
        settings: the starting settings (alignments are switched on when the engine has them).
        stdin, stdout: text streams; on a real terminal the line editor of :func:`input` is used.
    Returns:
        the number of sentences translated.
    """
    read = _reader(stdin, stdout, prompt)
    settings = replace(settings, alignment=settings.alignment or engine.supports_alignment)
    stdout.write(f"nmt interactive ({describe(settings)}): type a sentence, :help for commands, "
                 ":quit or Ctrl-D to leave\n")
    count = 0
    while True:
        try:
            line = read()
        except KeyboardInterrupt:  # Ctrl-C drops the line being typed, as in Python's REPL
            stdout.write("\n")
            continue
        if line is None:  # end of input (Ctrl-D)
            stdout.write("\n")
            break
        line = clean_line(line.rstrip("\r\n"), "<stdin>", count + 1)
        if not line:
            continue
        if line.startswith(":"):
            try:
                new = apply_command(line, settings, engine.supports_alignment)
            except CommandError as err:
                stdout.write(f"error: {err}\n")
                continue
            if new is None:
                break
            settings = new
            stdout.write((HELP + "\n" if line[1:].strip() in ("help", "h", "?") else "") + describe(settings) + "\n")
            continue
        count += 1
        try:
            stdout.write(_answer(engine, line, settings, count))
        except KeyboardInterrupt:
            stdout.write("\ninterrupted\n")
        stdout.flush()
    stdout.flush()
    return count


def _answer(engine, line: str, settings: DecodeSettings, n: int) -> str:
    """The n-best list (``rank  score  text``) and the heatmap of the best hypothesis."""
    decoded = engine.translate([line], settings, first_line=n)
    width = len(str(settings.nbest))
    out = [f"{rank:>{width}}  {h.score:8.4f}  {h.text}" for rank, h in enumerate(decoded.translations[0], 1)]
    if settings.alignment:
        heat = engine.heatmap(decoded, 0)
        if heat:
            out += ["", heat]
    return "\n".join(out) + "\n\n"


def _reader(stdin: IO[str], stdout: IO[str], prompt: str) -> Callable[[], Optional[str]]:
    """A function returning the next line (None at end of input), prompting first."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass

        def read_terminal() -> Optional[str]:
            try:
                return input(prompt)
            except EOFError:
                return None

        return read_terminal

    def read_stream() -> Optional[str]:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        return line if line else None

    return read_stream
