"""Prompt templates of the SuperGLUE tasks; "mezo" (the default) follows MeZO's PromptSource-style prompts.

Each template maps a canonical Record to an Example. Candidate order is the label order fixed by the
readers in `superglue.py` (e.g. RTE: 0 entailment -> "Yes", 1 not_entailment -> "No").
"""

from __future__ import annotations

from zofo.tasks.example import Example, Record


def _ask(prompt: str, answers: tuple[str, ...], record: Record) -> Example:
    return Example(prompt, answers, record["label"])


def rte_mezo(r: Record) -> Example:
    return _ask(f'{r["premise"]}\nDoes this mean that "{r["hypothesis"]}" is true? Yes or No?\n',
                ("Yes", "No"), r)


def rte_gpt3(r: Record) -> Example:
    return _ask(f'{r["premise"]}\nquestion: {r["hypothesis"]} True or False?\nanswer:',
                (" True", " False"), r)


def cb_mezo(r: Record) -> Example:
    return _ask(f'Suppose {r["premise"]} Can we infer that "{r["hypothesis"]}"? Yes, No, or Maybe?\n',
                ("Yes", "No", "Maybe"), r)


def cb_gpt3(r: Record) -> Example:
    return _ask(f'{r["premise"]}\nquestion: {r["hypothesis"]} true, false, or neither?\nanswer:',
                (" true", " false", " neither"), r)


def _question(text: str) -> str:
    """BoolQ questions come lower-case without a question mark: capitalise and add one."""
    text = text.strip()
    text = text if text.endswith("?") else text + "?"
    return text[:1].upper() + text[1:]


def boolq_mezo(r: Record) -> Example:
    return _ask(f'{r["passage"]} {_question(r["question"])}', (" No", " Yes"), r)


def boolq_qa(r: Record) -> Example:
    return _ask(f'{r["passage"]}\nquestion: {_question(r["question"])}\nanswer:', (" no", " yes"), r)


def wic_mezo(r: Record) -> Example:
    return _ask(f'Does the word "{r["word"]}" have the same meaning in these two sentences? Yes, No?\n'
                f'{r["sentence1"]}\n{r["sentence2"]}\n', ("No", "Yes"), r)


def wic_gpt3(r: Record) -> Example:
    return _ask(f'{r["sentence1"]}\n{r["sentence2"]}\nquestion: Is the word \'{r["word"]}\' used in the same '
                f"way in the two sentences above?\nanswer:", (" no", " yes"), r)


def wsc_mezo(r: Record) -> Example:
    pronoun = r["span2_text"].lower()
    return _ask(f'{r["text"]}\nIn the previous sentence, does the pronoun "{pronoun}" refer to '
                f'{r["span1_text"]}? Yes or No?\n', ("No", "Yes"), r)


def wsc_gpt3(r: Record) -> Example:
    return _ask(f'Passage: {r["text"]}\nQuestion: In the passage above, does the pronoun "{r["span2_text"]}" '
                f'refer to {r["span1_text"]}?\nAnswer:', (" no", " yes"), r)


def multirc_mezo(r: Record) -> Example:
    return _ask(f'{r["paragraph"]}\nQuestion: {r["question"]}\nI found this answer "{r["answer"]}". '
                f"Is that correct? Yes or No?\n", ("No", "Yes"), r)


def multirc_qa(r: Record) -> Example:
    return _ask(f'{r["paragraph"]}\nquestion: {r["question"]}\nanswer: {r["answer"]}\nIs the answer correct?',
                (" no", " yes"), r)


def _premise(r: Record) -> str:
    """COPA premise without its final full stop, followed by the connective ("so" / "because")."""
    premise = r["premise"].rstrip()
    premise = premise[:-1] if premise.endswith(".") else premise
    return premise + (" so" if r["question"] == "effect" else " because")


def _lower_first(choice: str) -> str:
    """Lower-case the choice's first word (it now continues a sentence), except the pronoun "I"."""
    words = choice.strip().split(" ")
    if words[0] != "I":
        words[0] = words[0].lower()
    return " ".join(words)


def copa_mezo(r: Record) -> Example:
    choices = (" " + _lower_first(r["choice1"]), " " + _lower_first(r["choice2"]))
    return Example(_premise(r), choices, r["label"])


def copa_mc(r: Record) -> Example:
    prompt = (f'{_premise(r)}?\nChoice 1: {r["choice1"].strip()}\nChoice 2: {r["choice2"].strip()}\n'
              "Which choice makes more sense? 1 or 2:")
    return Example(prompt, (" 1", " 2"), r["label"])


TEMPLATES = {
    "rte": {"mezo": rte_mezo, "gpt3": rte_gpt3},
    "cb": {"mezo": cb_mezo, "gpt3": cb_gpt3},
    "boolq": {"mezo": boolq_mezo, "qa": boolq_qa},
    "wic": {"mezo": wic_mezo, "gpt3": wic_gpt3},
    "wsc": {"mezo": wsc_mezo, "gpt3": wsc_gpt3},
    "multirc": {"mezo": multirc_mezo, "qa": multirc_qa},
    "copa": {"mezo": copa_mezo, "mc": copa_mc},
}
