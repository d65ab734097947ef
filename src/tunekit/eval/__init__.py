"""Evaluation: did the fine-tune learn the task, and what did it forget?

    samples.py     test set rows -> EvalSample (prompt messages, reference or None)
    metrics.py     exact match, BLEU-4, ROUGE-1/2/L, entity P/R/F1 (pure functions)
    choice.py      C-Eval / CMMLU / MMLU questions scored by option-letter likelihood
    tasks.py       which task and metrics a test set gets, and running it on an engine
    perplexity.py  the forgetting probe: perplexity on held-out general text
    predict.py     one target: predictions.jsonl + metrics.json (`tunekit eval`)
    compare.py     several targets: differences and forgetting (`tunekit compare`)
    report.py      the comparison as Markdown, a self-contained HTML page and a PNG chart
"""
