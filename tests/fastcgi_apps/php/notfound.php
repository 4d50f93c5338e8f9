<?php
http_response_code(404);
echo "nothing here\n";
