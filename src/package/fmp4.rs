//! fMP4/CMAF boxes: init segments and moof+mdat fragments for one track.
