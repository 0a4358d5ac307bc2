"""ExampleGen for the recipe's CSV (`label,u_1..u_U,i_1..i_I`, no header)."""
