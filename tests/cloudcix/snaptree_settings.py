"""The cloudcix client's settings (CLOUDCIX_SETTINGS_MODULE) for a snaptree server: the
API host is `snaptree.test` on the server's port, so the client calls
`http://iaas.snaptree.test:<port>/...` for the iaas application."""

import os

CLOUDCIX_API_URL = f"http://snaptree.test:{os.environ['SNAPTREE_PORT']}/"
CLOUDCIX_API_V2_URL = CLOUDCIX_API_URL
CLOUDCIX_API_VERSION = 2
