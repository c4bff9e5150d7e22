"""Small text helpers shared by the views: visible whitespace, probability colours, bars."""

from __future__ import annotations

VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})
BLOCKS = " ▏▎▍▌▋▊▉█"


def visible(text: str) -> str:
    """The text with its whitespace drawn, so ' Paris' and 'Paris' differ on screen."""
    return text.translate(VISIBLE) if text else "∅"


def prob_style(prob: float) -> str:
    """A colour for a probability: green when sure, through yellow, to red when unlikely."""
    if prob >= 0.7:
        return "green"
    if prob >= 0.4:
        return "yellow"
    if prob >= 0.1:
        return "dark_orange"
    return "red"


def bar(fraction: float, width: int = 20) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, with eighth-cell steps."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def fmt_prob(prob: float) -> str:
    """A probability in four decimals, or in scientific notation when smaller than that shows."""
    return f"{prob:.4f}" if prob >= 1e-4 or prob == 0 else f"{prob:.1e}"
