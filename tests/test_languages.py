"""The MADLAD-400 language table and code resolution."""

import re

import pytest

from atlas_t5x import languages
from atlas_t5x.languages import LANGUAGES, require_metadata, resolve_language, same_script

# Every language the spec's capacity mixtures and transfer matrices use (spec §4, §2).
SPEC_MIXTURE_LANGS = (
    "af ar ba bm bn ca ckb cy de ee el en es fa fil fr gn gu ha he hi hr id it ja jv kk ko mr ms "
    "my nl no om pl ps pt ro ru sm sv sw te th tr uk ur vi yo zh bg cs da fi hu lt sk"
).split()
ISO15924 = re.compile(r"^[A-Z][a-z]{3}$")


def test_table_covers_the_release_and_every_entry_has_metadata():
    assert len(LANGUAGES) == 419  # 418 languages + the zxx_xx_dtynoise bucket
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert ISO15924.match(lang.script), (code, lang.script)
        assert lang.name and lang.family and lang.genus, code
    for code in SPEC_MIXTURE_LANGS:
        assert code in LANGUAGES, code
    assert set(languages.UNCERTAIN) <= set(LANGUAGES)


def test_known_scripts_and_families():
    expect = {
        "en": ("Latn", "Indo-European", "Germanic"), "ru": ("Cyrl", "Indo-European", "Slavic"),
        "ja": ("Jpan", "Japonic", "Japanese"), "ko": ("Kore", "Koreanic", "Korean"),
        "hi": ("Deva", "Indo-European", "Indo-Aryan"), "ar": ("Arab", "Afro-Asiatic", "Semitic"),
        "zh": ("Hani", "Sino-Tibetan", "Sinitic"), "ckb": ("Arab", "Indo-European", "Iranian"),
        "sw": ("Latn", "Niger-Congo", "Bantu"), "fi": ("Latn", "Uralic", "Finnic"),
    }
    for code, (script, family, genus) in expect.items():
        lang = LANGUAGES[code]
        assert (lang.script, lang.family, lang.genus) == (script, family, genus)
    assert same_script("ur", "fa") and not same_script("hi", "ur")


@pytest.mark.parametrize(
    "given, code",
    [("pt_BR", "pt"), ("pt-PT", "pt"), ("zh-Hans", "zh"), ("zh_TW", "zh"), ("iw", "he"),
     ("en_US", "en"), ("es-419", "es"), ("KAA-latn", "kaa_Latn"), ("sr_Cyrl", "sr"),
     ("nan-Latn-TW", "nan_Latn_TW"), ("az_RU", "az_RU"), ("nb", "no"), (" de ", "de")],
)
def test_aliases_and_spellings(given, code):
    assert resolve_language(given).code == code


def test_unknown_code_names_it_and_suggests_nearest():
    with pytest.raises(ValueError, match=r"unknown language 'ckbb'; nearest valid codes: ckb"):
        resolve_language("ckbb")
    # a script MADLAD does not have for that language is not silently mapped to another entry
    with pytest.raises(ValueError, match=r"'sr_Latn'; nearest valid codes: sr\b"):
        resolve_language("sr_Latn")
    with pytest.raises(ValueError, match="unknown language"):
        resolve_language("")


def test_require_metadata_names_every_unknown_language():
    assert set(require_metadata(["en", "pt_BR"])) == {"en", "pt_BR"}
    with pytest.raises(ValueError) as err:
        require_metadata(["en", "qqq", "zzx"])
    assert "'qqq'" in str(err.value) and "'zzx'" in str(err.value) and "2 language" in str(err.value)
