"""`make up`: the stack of docker-compose.yml as processes on this machine, for where Docker is absent."""
