"""synrank's entry points, above every other room: `synrank` (cli.main, the console script) and its `deploy`
command (cli.deploy). They parse arguments, validate the config and start flows or deployments, so they may
import flows/, tasks/, models/ and synrank/; nothing imports them."""
