"""What every part of Hear and See agrees on, at the bottom of the imports: the wire protocol between the
app and the server (`protocol`), the class names both sides speak (`classes`) and where things are
(`paths`). It imports nothing else of the project, and no torch, pygame or GL."""
