"""The one kind of error a user can put right: a wrong flag, setting, file or model. The command line says it in
one line and exits with status 2, having started nothing; a server refuses the request and goes on."""


class UserError(Exception):
    """Something asked for that cannot be; the message names it, what it got and what it takes."""
