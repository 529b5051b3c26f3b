"""archdsl.grammar: the Lark grammar of the .arch language (archdsl.lark), shipped as package data."""
