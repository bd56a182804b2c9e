"""``spamfilter serve``: a daemon that speaks spamd's protocol, so that spamc, Exim's ``spam =``
condition and every other spamd client use the classifier unchanged, with concurrent messages
classified together (``batcher``)."""
