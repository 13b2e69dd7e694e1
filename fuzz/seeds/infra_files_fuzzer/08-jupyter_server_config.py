c = get_config()  # noqa
c.ServerApp.ip = 'localhost'
c.ServerApp.token = ''
c.ServerApp.password = 'argon2:$argon2id$v=19$m=10240,t=10,p=8$abc$def'
