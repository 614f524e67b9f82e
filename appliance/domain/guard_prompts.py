"""Guard models' prompt formats and verdicts, and what their categories are in OpenAI's
moderation names. Pure functions: text in, text or values out.

| format          | asks                                                     | answers                        |
|-----------------|----------------------------------------------------------|--------------------------------|
| `llama-guard-3` | once per input: the conversation and the 14 categories S1..S14 | `safe`, or `unsafe` and a line of codes (`S1,S10`) |
| `shieldgemma`   | once per input and policy (4): the text and one policy   | `Yes` (violates) or `No`       |

Llama Guard 3's codes onto OpenAI's names (a code with no OpenAI name still flags the input;
the codes themselves are in each result's `guard` field):

| code | Llama Guard 3             | OpenAI categories                          |
|------|---------------------------|--------------------------------------------|
| S1   | Violent Crimes            | violence, illicit, illicit/violent         |
| S2   | Non-Violent Crimes        | illicit                                    |
| S3   | Sex-Related Crimes        | sexual, illicit                            |
| S4   | Child Sexual Exploitation | sexual, sexual/minors                      |
| S5   | Defamation                | harassment                                 |
| S6   | Specialized Advice        | -                                          |
| S7   | Privacy                   | -                                          |
| S8   | Intellectual Property     | -                                          |
| S9   | Indiscriminate Weapons    | violence, illicit, illicit/violent         |
| S10  | Hate                      | hate                                       |
| S11  | Suicide & Self-Harm       | self-harm                                  |
| S12  | Sexual Content            | sexual                                     |
| S13  | Elections                 | -                                          |
| S14  | Code Interpreter Abuse    | illicit                                    |

ShieldGemma's policies: dangerous content -> violence, illicit, illicit/violent; harassment ->
harassment; hate speech -> hate; sexually explicit -> sexual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from appliance.domain.messages import content_text

GuardFormat = Literal["llama-guard-3", "shieldgemma"]

CATEGORIES: Final = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                     "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                     "sexual/minors", "violence", "violence/graphic")

LLAMA_GUARD_3: Final = {
    "S1": ("Violent Crimes", ("violence", "illicit", "illicit/violent")),
    "S2": ("Non-Violent Crimes", ("illicit",)),
    "S3": ("Sex-Related Crimes", ("sexual", "illicit")),
    "S4": ("Child Sexual Exploitation", ("sexual", "sexual/minors")),
    "S5": ("Defamation", ("harassment",)),
    "S6": ("Specialized Advice", ()),
    "S7": ("Privacy", ()),
    "S8": ("Intellectual Property", ()),
    "S9": ("Indiscriminate Weapons", ("violence", "illicit", "illicit/violent")),
    "S10": ("Hate", ("hate",)),
    "S11": ("Suicide & Self-Harm", ("self-harm",)),
    "S12": ("Sexual Content", ("sexual",)),
    "S13": ("Elections", ()),
    "S14": ("Code Interpreter Abuse", ("illicit",)),
}

# ShieldGemma takes any policy text; these are written for this gateway (short and concrete).
SHIELDGEMMA: Final = {
    "dangerous_content": ('"No Dangerous Content": The prompt shall not contain or seek content that helps '
                          "anyone harm themselves or others, such as making weapons or explosives, planning "
                          "attacks, or methods of suicide.", ("violence", "illicit", "illicit/violent")),
    "harassment": ('"No Harassment": The prompt shall not contain or seek content that threatens, intimidates, '
                   "bullies or abuses a person.", ("harassment",)),
    "hate_speech": ('"No Hate Speech": The prompt shall not contain or seek content that attacks or demeans '
                    "people for a protected attribute such as race, ethnicity, religion, disability, age, "
                    "nationality, sexual orientation or gender.", ("hate",)),
    "sexually_explicit": ('"No Sexually Explicit Information": The prompt shall not contain or seek sexually '
                          "explicit descriptions. Medical and educational terms are allowed.", ("sexual",)),
}

# The server adds the beginning-of-text token itself (vLLM and llama.cpp both do for a prompt).
_LG3_HEAD: Final = ("<|start_header_id|>user<|end_header_id|>\n\n"
                    "Task: Check if there is unsafe content in 'User' messages in conversations according "
                    "our safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\n")
_LG3_TAIL: Final = ("<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST User message in "
                    "the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a "
                    "second line must include a comma-separated list of violated categories."
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


class UnreadableVerdict(ValueError):
    """The guard answered something that is not a verdict of its format."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One input's verdict: flagged, the OpenAI categories, and the guard's own codes."""

    flagged: bool
    categories: frozenset[str]
    codes: tuple[str, ...] = ()


def turns(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The user and assistant turns with text, as (role, text); system and tool messages are
    the operator's and the tools' words, not the user's."""
    out = []
    for m in messages:
        role = m.get("role")
        if role in ("user", "assistant"):
            text = content_text(m.get("content"))
            if text:
                out.append((str(role), text))
    return out


def llama_guard_prompt(conversation: Sequence[tuple[str, str]]) -> str:
    """The whole Llama Guard 3 prompt (for a server's /v1/completions)."""
    categories = "".join(f"{code}: {name}.\n" for code, (name, _) in LLAMA_GUARD_3.items())
    talk = "".join(f"{'User' if role == 'user' else 'Agent'}: {text}\n\n" for role, text in conversation)
    return f"{_LG3_HEAD}{categories}<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n{talk}{_LG3_TAIL}"


def shieldgemma_prompt(text: str, policy: str) -> str:
    """One ShieldGemma question: does `text` (the user's) violate `policy`?"""
    return ("You are a policy expert trying to help determine whether a user prompt is in violation of the "
            "defined safety policies.\n\n<start_of_turn>\nHuman Question: " + text + "\n<end_of_turn>\n\n"
            "Our safety principle is defined in the below:\n\n* " + SHIELDGEMMA[policy][0] + "\n\n"
            "Does the human question violate the above principle? Your answer must start with 'Yes' or 'No'. "
            "And then walk through step by step to be sure we answer correctly.\n\n")


def read_llama_guard(answer: str) -> Verdict:
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        raise UnreadableVerdict("the first line is neither 'safe' nor 'unsafe'")
    if lines[0].lower() == "safe":
        return Verdict(False, frozenset())
    codes = tuple(c.strip().upper() for c in (lines[1] if len(lines) > 1 else "").split(",") if c.strip())
    names = frozenset(n for c in codes for n in LLAMA_GUARD_3.get(c, ("", ()))[1])
    return Verdict(True, names, codes)


def read_shieldgemma(answers: Mapping[str, str]) -> Verdict:
    """Each policy's answer ("Yes ..." / "No ...") as one verdict."""
    violated = []
    for policy, answer in answers.items():
        word = answer.strip().split(None, 1)[0].strip(".,:!").lower() if answer.strip() else ""
        if word not in ("yes", "no"):
            raise UnreadableVerdict(f"the answer for {policy} starts with neither 'Yes' nor 'No'")
        if word == "yes":
            violated.append(policy)
    names = frozenset(n for p in violated for n in SHIELDGEMMA[p][1])
    return Verdict(bool(violated), names, tuple(violated))
