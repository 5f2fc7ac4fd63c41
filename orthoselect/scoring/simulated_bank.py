"""The offline simulator's rule bank: hand-written rules for the demo corpus (Python standard-library
docstrings and comments, some degraded) with the latent factors each one measures."""

from __future__ import annotations

# The rule bank: (rule, loadings on FACTORS by initial c u b t n k p, bias). Rules under one comment
# load on the same factors; several are near-duplicates phrased differently (e.g. the first two).
BANK = [
    # characters and spelling
    ("Clean characters: The text contains no garbled, corrupted or random characters.", dict(c=1.3), 0.6),
    (
        "No encoding errors: The document is free of mojibake, stray symbols and broken character encodings.",
        dict(c=1.3),
        0.8,
    ),
    ("Spelling: Words are spelled correctly throughout the document.", dict(c=1.1, p=0.2), 0.5),
    (
        "No symbol clutter: The text is not littered with stray symbols, markup or control characters.",
        dict(c=1.0, k=-0.3),
        0.5,
    ),
    ("Grammar: Sentences are grammatical and correctly punctuated.", dict(c=0.8, p=0.5, t=0.2), 0.3),
    ("Readability: The text reads smoothly, without distracting typos or noise.", dict(c=0.9, p=0.4), 0.4),
    # repetition
    ("No repetition: The document does not repeat the same sentences or lines.", dict(u=1.3), 0.7),
    ("No duplicated lines: No line of the text appears more than once.", dict(u=1.3), 0.9),
    (
        "Originality of content: Each paragraph adds something new instead of echoing earlier ones.",
        dict(u=1.1, n=0.1),
        0.5,
    ),
    ("Conciseness: The text says each thing once, without redundant restatement.", dict(u=0.9, n=-0.4), 0.3),
    (
        "Lexical variety: The text uses a varied vocabulary rather than the same phrases over and over.",
        dict(u=0.9, n=0.2, p=0.2),
        0.2,
    ),
    # boilerplate
    ("No boilerplate: The text contains no navigation menus, cookie banners or copyright footers.", dict(b=1.3), 0.8),
    (
        "No web clutter: The document is free of website chrome such as 'click here', share buttons and "
        "sign-in prompts.",
        dict(b=1.3),
        0.7,
    ),
    ("No advertising: The text contains no advertisements, promotions or calls to subscribe.", dict(b=1.1), 1.0),
    ("Content focus: Every line belongs to the main content rather than to page furniture.", dict(b=0.9, u=0.3), 0.4),
    ("Neutral tone: The document is objective and free of marketing language.", dict(b=0.8, p=0.2), 0.6),
    # completeness
    ("Completeness: The document ends properly and is not cut off mid-sentence.", dict(t=1.3), 0.5),
    ("Not truncated: The text does not stop abruptly in the middle of a word or a thought.", dict(t=1.3), 0.6),
    ("Proper ending: The final sentence of the document is finished and punctuated.", dict(t=1.1, p=0.2), 0.3),
    (
        "Self-contained: The document can be understood without missing surrounding context.",
        dict(t=0.6, n=0.4, p=0.3),
        0.0,
    ),
    ("Integrity: The document is intact, neither cut off nor padded with repeats.", dict(t=0.8, u=0.8), 0.5),
    # substance and length
    ("Informativeness: The document conveys substantial, useful information.", dict(n=0.8, u=0.4, k=0.3), 0.2),
    ("Depth: The text explains its subject in detail rather than in passing.", dict(n=1.0, u=0.3), 0.0),
    ("Sufficient length: The document is long enough to teach something non-trivial.", dict(n=1.3), 0.3),
    ("Substantial content: The document has enough material to be worth training on.", dict(n=1.2, u=0.2), 0.2),
    ("Brevity: The document is short and to the point.", dict(n=-1.0, p=0.2), 0.0),
    ("Detail: Specific facts, names and parameters are given.", dict(n=0.5, k=0.6), 0.0),
    # technical content
    ("Technical precision: The text uses precise technical terms, names and values.", dict(k=1.0, n=0.2), 0.1),
    ("Code presence: The document contains code, identifiers or usage examples.", dict(k=1.3), -0.2),
    ("Code examples: The text includes concrete code snippets that illustrate its points.", dict(k=1.3), -0.4),
    (
        "Numerical detail: The document gives specific numbers, versions or quantities where relevant.",
        dict(k=0.9),
        -0.3,
    ),
    ("Relevance to programming: The document is about software, code or computing.", dict(k=0.7), 1.2),
    ("Examples: General statements are illustrated with concrete examples.", dict(k=0.7, n=0.4), -0.2),
    (
        "Documentation style: The text reads like good API documentation of parameters and return values.",
        dict(k=0.6, p=0.4, c=0.3),
        0.2,
    ),
    ("Accuracy signs: Statements are specific and checkable rather than vague.", dict(k=0.6, c=0.3, n=0.3), 0.1),
    # prose and clarity
    ("Natural prose: The text is written in fluent, natural English sentences.", dict(p=1.2, c=0.3), 0.3),
    ("Fluency: The document reads as well-formed, idiomatic English.", dict(p=1.1, c=0.4), 0.4),
    ("Plain language: The text avoids jargon and symbols and suits a general audience.", dict(p=0.9, k=-0.6), 0.0),
    ("Beginner friendliness: A newcomer to the topic could follow the text.", dict(p=0.7, k=-0.4, c=0.3), 0.0),
    ("Clarity: Each sentence has one clear meaning that is easy to follow.", dict(p=0.7, c=0.6), 0.3),
    ("Clear writing: Ideas are expressed clearly and unambiguously.", dict(p=0.7, c=0.6), 0.4),
    ("Sentence completeness: Sentences have a subject and a verb and end with punctuation.", dict(p=0.5, t=0.7), 0.3),
    ("Punctuation: Sentences end with proper punctuation marks.", dict(p=0.5, t=0.7), 0.4),
    # overall quality, mixing several factors
    (
        "Coherence: The text develops its topic in a logical order without abrupt jumps.",
        dict(c=0.5, u=0.5, t=0.5, p=0.3),
        0.3,
    ),
    ("Logical flow: Each sentence follows naturally from the one before.", dict(c=0.5, u=0.5, t=0.5, p=0.4), 0.2),
    ("Overall quality: The document is well written, clean and complete.", dict(c=0.6, u=0.6, b=0.6, t=0.6), 0.5),
    (
        "Fine-tuning value: The document is the kind of clean, complete text worth training a model on.",
        dict(c=0.6, u=0.6, b=0.6, t=0.5, n=0.2),
        0.4,
    ),
    ("Professional tone: The writing is professional and free of clutter or spam.", dict(b=0.7, c=0.6), 0.5),
    (
        "Trustworthiness: The document looks like a carefully edited, authoritative source.",
        dict(c=0.5, b=0.5, u=0.4, t=0.4),
        0.3,
    ),
    ("Noise-free: The document has no corrupted text, spam or duplicated fragments.", dict(c=0.7, u=0.6, b=0.5), 0.6),
    (
        "Formatting: Whitespace, indentation and line breaks are consistent and purposeful.",
        dict(u=0.5, c=0.5, k=0.2),
        0.4,
    ),
    ("Well-formed structure: Paragraphs are organised and clearly separated.", dict(p=0.4, u=0.5, t=0.4), 0.2),
    ("Consistency: Terminology and style stay consistent throughout the document.", dict(u=0.4, c=0.6, p=0.3), 0.5),
    (
        "Human-written: The text reads as written by a person for readers, not as generated filler.",
        dict(p=0.6, u=0.6, b=0.4),
        0.3,
    ),
    (
        "Educational value: The document would help a reader learn something about programming.",
        dict(k=0.6, n=0.6, c=0.3, u=0.3),
        0.0,
    ),
    (
        "Instructional clarity: The text explains how to do something in clear steps.",
        dict(p=0.5, k=0.4, t=0.3, c=0.3),
        0.0,
    ),
    ("Explains behaviour: The text describes what code does and why.", dict(k=0.5, p=0.5, n=0.3, c=0.3), 0.1),
    (
        "Task relevance: The content helps teach an assistant to answer technical questions.",
        dict(k=0.6, n=0.4, p=0.2, c=0.3),
        0.0,
    ),
    ("Answerability: The text contains facts a user could ask questions about.", dict(n=0.6, k=0.4, u=0.3), 0.1),
    # rules that hardly vary on this kind of data
    ("Safety: The document contains no harmful, offensive or toxic content.", dict(c=0.15), 2.2),
    ("Privacy: The text exposes no personal data such as e-mail addresses or phone numbers.", dict(b=0.2), 2.0),
    ("Timelessness: The content does not depend on dates, versions or current events.", dict(k=-0.5), 0.6),
]
