"""Letters of other scripts drawn like Latin letters and digits, read as the Latin letter.

A subset of Unicode's confusables data (UTS #39, `confusables.txt`), taken from the JSON form
that confusable-homoglyphs 3.3.1 ships (pypi.org/project/confusable-homoglyphs): every
character confusable with one ASCII letter or digit that NFKC leaves alone (NFKC already reads
full-width and mathematical letters as ASCII) and that is not a mark, mapped to that letter in
lower case; `0` lookalikes read `o`, and every `I`, `l` and `1` lookalike reads `i` (in a
case-insensitive comparison they are one glyph). pdp.telemetry.masking reads keys with it, so
`Authorization` spelt with Cherokee, Lisu, Armenian, Coptic or Latin-extended lookalikes is
still the credential key it reads as. 371 characters, selected by the rules above from
the JSON's entries for the 62 ASCII letters and digits.

The data is Unicode's, under the Unicode License v3:

    UNICODE LICENSE V3

    COPYRIGHT AND PERMISSION NOTICE

    Copyright (c) 1991-2024 Unicode, Inc.

    NOTICE TO USER: Carefully read the following legal agreement. BY DOWNLOADING,
    INSTALLING, COPYING OR OTHERWISE USING DATA FILES, AND/OR SOFTWARE, YOU UNEQUIVOCALLY
    ACCEPT, AND AGREE TO BE BOUND BY, ALL OF THE TERMS AND CONDITIONS OF THIS AGREEMENT.
    IF YOU DO NOT AGREE, DO NOT DOWNLOAD, INSTALL, COPY, DISTRIBUTE OR USE THE DATA FILES
    OR SOFTWARE.

    Permission is hereby granted, free of charge, to any person obtaining a copy of data
    files and any associated documentation (the "Data Files") or software and any
    associated documentation (the "Software") to deal in the Data Files or Software without
    restriction, including without limitation the rights to use, copy, modify, merge,
    publish, distribute, and/or sell copies of the Data Files or Software, and to permit
    persons to whom the Data Files or Software are furnished to do so, provided that either
    (a) this copyright and permission notice appear with all copies of the Data Files or
    Software, or (b) this copyright and permission notice appear in associated
    Documentation.

    THE DATA FILES AND SOFTWARE ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
    OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR
    A PARTICULAR PURPOSE AND NONINFRINGEMENT OF THIRD PARTY RIGHTS.

    IN NO EVENT SHALL THE COPYRIGHT HOLDER OR HOLDERS INCLUDED IN THIS NOTICE BE LIABLE FOR
    ANY CLAIM, OR ANY SPECIAL INDIRECT OR CONSEQUENTIAL DAMAGES, OR ANY DAMAGES WHATSOEVER
    RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT,
    NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR
    PERFORMANCE OF THE DATA FILES OR SOFTWARE.

    Except as contained in this notice, the name of a copyright holder shall not be used in
    advertising or otherwise to promote the sale, use or other dealings in these Data Files
    or Software without prior written authorization of the copyright holder.

The JSON it was read from is confusable-homoglyphs' (MIT License, Copyright (c) 2016-2018
Victor Felder, 2024 Elena Grandi); no code of it is used.
"""

# The characters, and the letter each reads as (same order).
SOURCES = (
    "\u00d7\u0131\u0184\u018d\u0196\u01a6\u01bd\u01c0\u0251\u0261\u0263\u0269"
    "\u026a\u026f\u028b\u028f\u037f\u0391\u0392\u0395\u0396\u0397\u0399\u039a"
    "\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u03b1\u03b3\u03b9\u03bd\u03bf"
    "\u03c1\u03c3\u03c5\u03dc\u03f3\u03fa\u0405\u0406\u0408\u0410\u0412\u0415"
    "\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425\u042c\u0430\u0433"
    "\u0435\u043e\u0440\u0441\u0443\u0445\u0455\u0456\u0458\u0461\u0474\u0475"
    "\u04ae\u04af\u04bb\u04bd\u04c0\u04cf\u0501\u050c\u051b\u051c\u051d\u054d"
    "\u054f\u0555\u0561\u0563\u0566\u0570\u0578\u057c\u057d\u0581\u0584\u0585"
    "\u06f1\u06f5\u06f7\u0966\u09e6\u0a66\u0ae6\u0b20\u0b66\u0be6\u0c02\u0c66"
    "\u0c82\u0ce6\u0d02\u0d20\u0d66\u0d82\u0e50\u0ed0\u101d\u1040\u10e7\u10ff"
    "\u1200\u12d0\u13a0\u13a1\u13a2\u13a5\u13a9\u13aa\u13ab\u13ac\u13b3\u13b7"
    "\u13bb\u13bd\u13c0\u13c2\u13c3\u13cf\u13d2\u13d4\u13d5\u13d9\u13da\u13de"
    "\u13df\u13e2\u13e6\u13e7\u13f3\u13f4\u142f\u144c\u146d\u146f\u1472\u148d"
    "\u14aa\u1541\u157c\u157d\u1587\u15af\u15b4\u15c5\u15de\u15ea\u15f0\u15f7"
    "\u166d\u166e\u16b7\u16c1\u16d5\u16d6\u1d04\u1d0f\u1d11\u1d1c\u1d20\u1d21"
    "\u1d22\u1d26\u1d83\u1d8c\u1e9d\u1eff\u212e\u2223\u2228\u222a\u22a4\u22c1"
    "\u22c3\u22ff\u2373\u2374\u237a\u23fd\u2573\u27d9\u292b\u292c\u2a2f\u2c85"
    "\u2c8e\u2c92\u2c94\u2c98\u2c9a\u2c9e\u2c9f\u2ca2\u2ca3\u2ca4\u2ca5\u2ca6"
    "\u2ca8\u2cac\u2cd0\u2d38\u2d39\u2d4f\u2d54\u2d55\u2d5d\u3007\ua4d0\ua4d1"
    "\ua4d2\ua4d3\ua4d4\ua4d6\ua4d7\ua4d9\ua4da\ua4dc\ua4dd\ua4df\ua4e0\ua4e1"
    "\ua4e2\ua4e3\ua4e6\ua4e7\ua4ea\ua4eb\ua4ec\ua4ee\ua4f0\ua4f2\ua4f3\ua4f4"
    "\ua647\ua6df\ua731\ua798\ua799\ua79f\ua7b2\ua7b3\ua7b4\uab32\uab35\uab3d"
    "\uab47\uab48\uab4e\uab52\uab5a\uab75\uab81\uab83\uab93\uaba9\uabaa\uabaf"
    "\U00010282\U00010286\U00010287\U0001028a\U00010290\U00010292\U00010295\U00010296\U00010297\U000102a0\U000102a1\U000102a2"
    "\U000102a5\U000102ab\U000102b0\U000102b1\U000102b2\U000102b4\U000102cf\U000102f5\U00010301\U00010302\U00010309\U00010311"
    "\U00010315\U00010317\U00010320\U00010322\U00010404\U00010415\U0001041b\U00010420\U0001042c\U0001043d\U00010448\U000104b4"
    "\U000104c2\U000104ce\U000104ea\U000104f6\U00010513\U00010516\U00010518\U0001051c\U0001051d\U00010525\U00010526\U00010527"
    "\U000114d0\U00011706\U0001170a\U0001170e\U0001170f\U000118a0\U000118a2\U000118a3\U000118a4\U000118a6\U000118a9\U000118ae"
    "\U000118b2\U000118b5\U000118b8\U000118bc\U000118c0\U000118c1\U000118c2\U000118c3\U000118c4\U000118c8\U000118d7\U000118d8"
    "\U000118dc\U000118e0\U000118e5\U000118e6\U000118e9\U000118ec\U000118ef\U000118f2\U00016f08\U00016f0a\U00016f16\U00016f28"
    "\U00016f35\U00016f3a\U00016f40\U00016f42\U00016f43\U0001d20d\U0001d213\U0001d216\U0001d22a\U0001f74c\U0001f768"
)
TARGETS = (
    "xibgirsiagyiiwuyjabezhikmnoptyxayivopoufjmsijabekmhopctyxbareopcyxsijwvvyyheiidg"
    "qwwusowqqhnnugfoiovoooooooooooooooooooyouodrtiyajewmhyghzbrwsvsicpkdgbvupdbjixhx"
    "rbfaddmbxxxikmcoouvwzrgyfyeivutvueipaixtxxxrhikmnooppcctyxiveioqxobpddtgkjczfmni"
    "srvhwxyaeiouivsffujxbeforruuyirwzvscbefixopstabcfomtyxhzbcimtxixocisocsrouounokc"
    "vfixovwwwvfiyezeioutvsfizoouyozwcxwcvtiirsauyvfrict"
)
assert len(SOURCES) == len(TARGETS)
