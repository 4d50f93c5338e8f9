<?php
header("Content-Type: text/gemini");
echo "# hello from php\n";
echo "query " . $_SERVER["QUERY_STRING"] . "\n";
