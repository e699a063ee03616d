"""The engine benchmarks' prompts, in a module without torch so the llama.cpp bench venv can import them."""

PROMPTS = [
    "Explain how a hash map works.",
    "Write a Python function that reverses a linked list.",
    "What are the main causes of inflation?",
    "Summarise the plot of Hamlet in a paragraph.",
    "Give me three tips for writing clean code.",
    "How does TCP congestion control work?",
    "Write a SQL query that finds duplicate emails in a users table.",
    "What is the difference between a process and a thread?",
]
