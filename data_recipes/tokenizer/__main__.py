"""Clean a data recipe's corpus and train only its tokenizer, into runs/data/<name>/tokenizer/
(the folder is left unfinished: no shards, no manifest.json).

A package __main__ so that `data_recipes.build` can import the tokenizer (data_recipes/tokenizer/
__init__.py) while this command imports the build: no import circle.

Run as:
    CPU:  make tokenizer RECIPE=demo   (= python -m data_recipes.tokenizer data_recipes/recipes/demo.yaml)
    GPU:  the same (tokenizer training runs on CPU)
"""
from data_recipes.build import main

if __name__ == "__main__":
    main(only="tokenizer", prog="data_recipes.tokenizer")
