"""Projects (`ds01 project …`): a folder in ~/workspace with the usual ML layout, the image it
runs in ([tool.ds01] in its pyproject.toml, its Dockerfile) and a VS Code Dev Containers
configuration. Files only: building and deploying go through images/ and ds01d."""
