"""What users type and read in: prompts as tokens, positions, facts and pairs files."""
