"""What the three wire packages (openai/, anthropic/, ollama/) share: their one error and the
checks every request body gets before a dialect reads it. Imports nothing else of ours."""
