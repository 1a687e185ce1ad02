"""Static files of the web chat (the widget script and the hosted page); a package so wheels ship them."""
