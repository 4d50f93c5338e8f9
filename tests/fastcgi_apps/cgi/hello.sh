#!/bin/sh
# A CGI-style reply (Content-Type header) that gemfcgi translates to 20.
printf 'Content-Type: text/gemini\r\n\r\n'
echo "# hello from a shell script"
