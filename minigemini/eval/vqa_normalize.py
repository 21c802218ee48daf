"""Standard VQA answer normalisation and soft accuracy.

Re-implements the behaviour of the official VQA evaluator (GT-vision-lab `vqaEval.py`) and of
its EvalAI/M4C copy used by LLaVA and Mini-Gemini (`llava/eval/m4c_evaluator.py`,
`EvalAIAnswerProcessor` + `TextVQAAccuracyEvaluator`), quirks included:

* the period-stripping regex is upstream's `(?!<=\\d)(\\.)(?!\\d)` (its look-behind is
  mistyped, so it removes every period that is *not followed* by a digit: "the cat." -> "the
  cat", "3.5" kept) and, as upstream passes `re.UNICODE` as the count, at most 32 periods;
* punctuation is deleted when it touches a space (or when the text has a digit,digit comma),
  otherwise replaced by a space;
* number words zero..ten -> digits, articles a/an/the dropped, a fixed contraction table.
"""

from __future__ import annotations

import re
from collections import Counter

_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
          "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: same pattern as upstream
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
_UPSTREAM_PERIOD_COUNT = int(re.UNICODE)  # upstream passes re.UNICODE (32) as `count`

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})


def _build_contractions() -> dict[str, str]:
    # "written-without-apostrophe=>canonical" pairs of the official table, space separated.
    spec = (
        "aint=>ain't arent=>aren't cant=>can't couldve=>could've couldnt=>couldn't "
        "couldn'tve=>couldn't've couldnt've=>couldn't've didnt=>didn't doesnt=>doesn't "
        "dont=>don't hadnt=>hadn't hadnt've=>hadn't've hadn'tve=>hadn't've hasnt=>hasn't "
        "havent=>haven't hed=>he'd hed've=>he'd've he'dve=>he'd've hes=>he's howd=>how'd "
        "howll=>how'll hows=>how's Id've=>I'd've I'dve=>I'd've Im=>I'm Ive=>I've isnt=>isn't "
        "itd=>it'd itd've=>it'd've it'dve=>it'd've itll=>it'll let's=>let's maam=>ma'am "
        "mightnt=>mightn't mightnt've=>mightn't've mightn'tve=>mightn't've mightve=>might've "
        "mustnt=>mustn't mustve=>must've neednt=>needn't notve=>not've oclock=>o'clock "
        "oughtnt=>oughtn't ow's'at=>'ow's'at 'ows'at=>'ow's'at 'ow'sat=>'ow's'at shant=>shan't "
        "shed've=>she'd've she'dve=>she'd've she's=>she's shouldve=>should've "
        "shouldnt=>shouldn't shouldnt've=>shouldn't've shouldn'tve=>shouldn't've "
        "somebody'd=>somebodyd somebodyd've=>somebody'd've somebody'dve=>somebody'd've "
        "somebodyll=>somebody'll somebodys=>somebody's someoned=>someone'd "
        "someoned've=>someone'd've someone'dve=>someone'd've someonell=>someone'll "
        "someones=>someone's somethingd=>something'd somethingd've=>something'd've "
        "something'dve=>something'd've somethingll=>something'll thats=>that's "
        "thered=>there'd thered've=>there'd've there'dve=>there'd've therere=>there're "
        "theres=>there's theyd=>they'd theyd've=>they'd've they'dve=>they'd've "
        "theyll=>they'll theyre=>they're theyve=>they've twas=>'twas wasnt=>wasn't "
        "wed've=>we'd've we'dve=>we'd've weve=>we've werent=>weren't whatll=>what'll "
        "whatre=>what're whats=>what's whatve=>what've whens=>when's whered=>where'd "
        "wheres=>where's whereve=>where've whod=>who'd whod've=>who'd've who'dve=>who'd've "
        "wholl=>who'll whos=>who's whove=>who've whyll=>why'll whyre=>why're whys=>why's "
        "wont=>won't wouldve=>would've wouldnt=>wouldn't wouldnt've=>wouldn't've "
        "wouldn'tve=>wouldn't've yall=>y'all yall'll=>y'all'll y'allll=>y'all'll "
        "yall'd've=>y'all'd've y'alld've=>y'all'd've y'all'dve=>y'all'd've youd=>you'd "
        "youd've=>you'd've you'dve=>you'd've youll=>you'll youre=>you're youve=>you've")
    return dict(pair.split("=>") for pair in spec.split())


CONTRACTIONS = _build_contractions()


def process_punctuation(text: str) -> str:
    """Official VQA punctuation handling (delete or space out punctuation, strip periods)."""
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if digit_comma or (p + " " in text) or (" " + p in text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_UPSTREAM_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, canonicalise contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """EvalAI/M4C answer processing used for TextVQA (and LLaVA's VQAv2 submission files)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def soft_scores(answers: list[str]) -> dict[str, float]:
    """VQA accuracy each distinct (already normalised) answer would get against `answers`.

    Mean over the leave-one-annotator-out subsets of min(1, #matches among the rest / 3).
    With n annotators and an answer given c times: (c*min(1,(c-1)/3) + (n-c)*min(1,c/3)) / n.
    """
    n = len(answers)
    if n == 0:
        return {}
    return {a: (c * min(1.0, (c - 1) / 3) + (n - c) * min(1.0, c / 3)) / n
            for a, c in Counter(answers).items()}


def textvqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """M4C `TextVQAAccuracyEvaluator` score in [0, 1]: both sides through `normalize_answer`."""
    scores = soft_scores([normalize_answer(a) for a in gt_answers])
    return scores.get(normalize_answer(prediction), 0.0)


def vqav2_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """Official `vqaEval.py` score in [0, 1] for an (already EvalAI-processed) prediction.

    Answers are whitespace-cleaned; only when the annotators disagree are both sides run
    through punctuation + digit/article processing (as the official evaluator does).
    """
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in gt_answers]
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    return soft_scores(gts).get(pred, 0.0)
