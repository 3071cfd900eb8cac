"""What the app and the server share, at the bottom of the imports: the wire protocol (`protocol`) and where
things are (`paths`). It imports nothing else of the project, and no torch, pygame or GL."""
