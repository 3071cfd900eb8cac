"""What the app and the server share, at the bottom of the imports: the wire protocol (`protocol`), where
things are (`paths`) and how a recording becomes samples (`sound`). It imports nothing else of the project, and no
torch, pygame or GL."""
