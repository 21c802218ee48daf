"""MMMU response parsing and matching, re-implementing MMMU's `eval/eval_utils.py`.

`parse_multi_choice_response`: bracketed letters "(A)" first, then bare " A " tokens, then (for
responses longer than 5 words) option texts; several candidates -> the one occurring last;
none -> a random letter (upstream seeds `random` with 42) or None when `rng` is None.
`parse_open_response`: key sub-responses after "could be/so/is/thus/therefore/final/answer/
result" (and "=" in the last sentence), plus every number in them, normalised (numbers ->
float rounded to 2 decimals, strings lower-cased). `eval_open`: a float prediction must equal a
gold float; a string prediction is right when it contains a gold string.
"""

from __future__ import annotations

import random
import re
from typing import Union

Norm = Union[str, float]

_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCI = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ",
                   "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}


def parse_multi_choice_response(response: str, all_choices: list[str],
                                index2ans: dict[str, str],
                                rng: random.Random | None = None) -> str | None:
    """Predicted option letter of a free-form response (MMMU rules)."""
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(ch)
    response = f" {response} "
    candidates = [c for c in all_choices if f"({c})" in response]
    bracketed = bool(candidates)
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    by_text = False
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, ans in index2ans.items() if ans.lower() in response.lower()]
        by_text = bool(candidates)
    if not candidates:
        return rng.choice(all_choices) if rng is not None else None
    if len(candidates) == 1:
        return candidates[0]
    if by_text:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    elif bracketed:
        positions = [response.rfind(f"({c})") for c in candidates]
    else:
        positions = [response.rfind(f" {c} ") for c in candidates]
    return candidates[positions.index(max(positions))]


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(text: str) -> list[Norm]:
    """Numbers -> [float rounded to 2 places]; strings -> lower-cased (1-char padded)."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


def extract_numbers(text: str) -> list[str]:
    """All numbers in `text`: with thousands commas, scientific, then plain."""
    return _NUM_COMMAS.findall(text) + _NUM_SCI.findall(text) + _NUM_SIMPLE.findall(text)


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for i, sent in enumerate(sentences):
        indicators = _KEY_INDICATORS + (("=",) if i == len(sentences) - 1 else ())
        shortest = None
        for ind in indicators:
            if ind in sent:
                tail = sent.split(ind)[-1].strip()
                if shortest is None or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [response]


def parse_open_response(response: str) -> list[Norm]:
    """Normalised candidate answers (strings and floats) of an open-ended response."""
    keys = _key_subresponses(response)
    preds: list[str] = list(keys)
    for key in keys:
        preds.extend(extract_numbers(key))
    out: list[Norm] = []
    for p in preds:
        for norm in normalize_str(p):
            if norm not in out:
                out.append(norm)
    return out


def eval_open(gold: str | list[str], preds: list[Norm]) -> bool:
    """MMMU open-question match of parsed predictions against gold answer(s)."""
    golds: list[Norm] = []
    for g in (gold if isinstance(gold, list) else [gold]):
        golds.extend(normalize_str(str(g)))
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False
