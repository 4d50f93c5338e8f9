<?php
header("Location: gemini://localhost/elsewhere");
