# Configuration file for jupyter-server.
c = get_config()  # noqa

## The IP address the Jupyter server will listen on.
c.ServerApp.ip = '0.0.0.0'
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
## Token used for authenticating first-time connections to the server.
c.ServerApp.token = ''
c.ServerApp.allow_origin = '*'
