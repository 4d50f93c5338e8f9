<?php
// Answers after the milliseconds the query names (300 by default).
usleep((int)($_GET["ms"] ?? 300) * 1000);
header("Content-Type: text/gemini");
echo "slow\n";
