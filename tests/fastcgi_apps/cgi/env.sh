#!/bin/sh
# A raw Gemini reply from a CGI script run by fcgiwrap: the parameters it got.
printf '20 text/plain\r\n'
echo "SCRIPT_NAME=$SCRIPT_NAME"
echo "PATH_INFO=$PATH_INFO"
echo "QUERY_STRING=$QUERY_STRING"
echo "REMOTE_ADDR=$REMOTE_ADDR"
echo "SERVER_NAME=$SERVER_NAME"
echo "TLS_VERSION=$TLS_VERSION"
echo "AUTH_TYPE=$AUTH_TYPE"
echo "GEMINI_URL_PATH=$GEMINI_URL_PATH"
