"""The MADLAD-400 languages: code, English name, ISO 15924 script and language family.

`LANGUAGES` holds every language folder of the MADLAD-400 "clean" release, in the release's
order (largest first): 418 languages plus `zxx_xx_dtynoise`, the release's bucket of
non-linguistic noise, kept so that every folder of the release resolves. The ATLAS paper and this
project's brief speak of "420 languages"; MADLAD-400's own paper (Kudugunta et al. 2023, arXiv
2309.04662) and its dataset card say "419 languages", and the card's language list is exactly the
419 entries below, in the same order. We could not identify a 420th code, so none is invented here.

Codes follow the release's folder names (`kaa_Latn`, `nan_Latn_TW`). `resolve_language` also
accepts common spellings and aliases (see `ALIASES` and `resolve_language`), e.g. `pt_BR` → `pt`,
`zh-Hans` → `zh`, `iw` → `he`, `kaa-Latn` → `kaa_Latn`.

Metadata: `script` is the ISO 15924 code of the script the release's text is predominantly
written in; `family` is the top-level language family and `genus` a branch at roughly the level
of Germanic/Romance/Slavic (WALS-style genera). Creoles and pidgins are grouped under the family
"Creole or pidgin" with their lexifier as genus; constructed languages under "Constructed".
Entries we are not fully certain of are listed in `UNCERTAIN` with the reason; every code has a
script and a family.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Language:
    """One MADLAD-400 language.

    Attributes:
      code: the release's code (folder name), e.g. "en", "kaa_Latn".
      name: English name.
      script: ISO 15924 script code, e.g. "Latn", "Cyrl", "Arab", "Deva", "Hani", "Jpan", "Kore".
      family: top-level language family, e.g. "Indo-European", "Niger-Congo".
      genus: branch within the family, e.g. "Romance", "Bantu".
    """

    code: str
    name: str
    script: str
    family: str
    genus: str


# code, name, ISO 15924 script, family, genus; columns separated by two or more spaces.
_TABLE = """
en               English                                         Latn  Indo-European        Germanic
ru               Russian                                         Cyrl  Indo-European        Slavic
es               Spanish                                         Latn  Indo-European        Romance
de               German                                          Latn  Indo-European        Germanic
fr               French                                          Latn  Indo-European        Romance
it               Italian                                         Latn  Indo-European        Romance
pt               Portuguese                                      Latn  Indo-European        Romance
pl               Polish                                          Latn  Indo-European        Slavic
nl               Dutch                                           Latn  Indo-European        Germanic
tr               Turkish                                         Latn  Turkic               Oghuz
vi               Vietnamese                                      Latn  Austroasiatic        Vietic
cs               Czech                                           Latn  Indo-European        Slavic
id               Indonesian                                      Latn  Austronesian         Malayic
ro               Romanian                                        Latn  Indo-European        Romance
sv               Swedish                                         Latn  Indo-European        Germanic
hu               Hungarian                                       Latn  Uralic               Ugric
uk               Ukrainian                                       Cyrl  Indo-European        Slavic
fa               Persian                                         Arab  Indo-European        Iranian
ja               Japanese                                        Jpan  Japonic              Japanese
el               Greek                                           Grek  Indo-European        Greek
fi               Finnish                                         Latn  Uralic               Finnic
zh               Chinese                                         Hani  Sino-Tibetan         Sinitic
da               Danish                                          Latn  Indo-European        Germanic
th               Thai                                            Thai  Kra-Dai              Tai
no               Norwegian                                       Latn  Indo-European        Germanic
bg               Bulgarian                                       Cyrl  Indo-European        Slavic
ko               Korean                                          Kore  Koreanic             Korean
ar               Arabic                                          Arab  Afro-Asiatic         Semitic
sk               Slovak                                          Latn  Indo-European        Slavic
ca               Catalan                                         Latn  Indo-European        Romance
lt               Lithuanian                                      Latn  Indo-European        Baltic
he               Hebrew                                          Hebr  Afro-Asiatic         Semitic
sl               Slovenian                                       Latn  Indo-European        Slavic
et               Estonian                                        Latn  Uralic               Finnic
lv               Latvian                                         Latn  Indo-European        Baltic
hi               Hindi                                           Deva  Indo-European        Indo-Aryan
sq               Albanian                                        Latn  Indo-European        Albanian
az               Azerbaijani                                     Latn  Turkic               Oghuz
hr               Croatian                                        Latn  Indo-European        Slavic
ta               Tamil                                           Taml  Dravidian            South Dravidian
ms               Malay                                           Latn  Austronesian         Malayic
ml               Malayalam                                       Mlym  Dravidian            South Dravidian
sr               Serbian                                         Cyrl  Indo-European        Slavic
kk               Kazakh                                          Cyrl  Turkic               Kipchak
te               Telugu                                          Telu  Dravidian            South-Central Dravidian
mr               Marathi                                         Deva  Indo-European        Indo-Aryan
is               Icelandic                                       Latn  Indo-European        Germanic
bs               Bosnian                                         Latn  Indo-European        Slavic
mk               Macedonian                                      Cyrl  Indo-European        Slavic
gl               Galician                                        Latn  Indo-European        Romance
eu               Basque                                          Latn  Basque (isolate)     Basque
bn               Bengali                                         Beng  Indo-European        Indo-Aryan
be               Belarusian                                      Cyrl  Indo-European        Slavic
ka               Georgian                                        Geor  Kartvelian           Georgian-Zan
fil              Filipino                                        Latn  Austronesian         Philippine
mn               Mongolian                                       Cyrl  Mongolic             Mongolic
af               Afrikaans                                       Latn  Indo-European        Germanic
uz               Uzbek                                           Latn  Turkic               Karluk
gu               Gujarati                                        Gujr  Indo-European        Indo-Aryan
kn               Kannada                                         Knda  Dravidian            South Dravidian
kaa              Karakalpak                                      Cyrl  Turkic               Kipchak
sw               Swahili                                         Latn  Niger-Congo          Bantu
ur               Urdu                                            Arab  Indo-European        Indo-Aryan
ne               Nepali                                          Deva  Indo-European        Indo-Aryan
cy               Welsh                                           Latn  Indo-European        Celtic
hy               Armenian                                        Armn  Indo-European        Armenian
ky               Kyrgyz                                          Cyrl  Turkic               Kipchak
si               Sinhala                                         Sinh  Indo-European        Indo-Aryan
tt               Tatar                                           Cyrl  Turkic               Kipchak
tg               Tajik                                           Cyrl  Indo-European        Iranian
la               Latin                                           Latn  Indo-European        Italic
so               Somali                                          Latn  Afro-Asiatic         Cushitic
ga               Irish                                           Latn  Indo-European        Celtic
km               Khmer                                           Khmr  Austroasiatic        Khmeric
mt               Maltese                                         Latn  Afro-Asiatic         Semitic
eo               Esperanto                                       Latn  Constructed          Constructed
ps               Pashto                                          Arab  Indo-European        Iranian
rw               Kinyarwanda                                     Latn  Niger-Congo          Bantu
ku               Kurdish (Kurmanji)                              Latn  Indo-European        Iranian
lo               Lao                                             Laoo  Kra-Dai              Tai
fy               Western Frisian                                 Latn  Indo-European        Germanic
ha               Hausa                                           Latn  Afro-Asiatic         Chadic
my               Burmese                                         Mymr  Sino-Tibetan         Lolo-Burmese
dv               Dhivehi                                         Thaa  Indo-European        Indo-Aryan
pa               Punjabi                                         Guru  Indo-European        Indo-Aryan
ckb              Central Kurdish (Sorani)                        Arab  Indo-European        Iranian
lb               Luxembourgish                                   Latn  Indo-European        Germanic
mg               Malagasy                                        Latn  Austronesian         Barito
ht               Haitian Creole                                  Latn  Creole or pidgin     French-based
ug               Uyghur                                          Arab  Turkic               Karluk
am               Amharic                                         Ethi  Afro-Asiatic         Semitic
or               Odia                                            Orya  Indo-European        Indo-Aryan
fo               Faroese                                         Latn  Indo-European        Germanic
gd               Scottish Gaelic                                 Latn  Indo-European        Celtic
ba               Bashkir                                         Cyrl  Turkic               Kipchak
tk               Turkmen                                         Latn  Turkic               Oghuz
mi               Maori                                           Latn  Austronesian         Oceanic
hmn              Hmong                                           Latn  Hmong-Mien           Hmongic
grc              Ancient Greek                                   Grek  Indo-European        Greek
jv               Javanese                                        Latn  Austronesian         Javanese
ceb              Cebuano                                         Latn  Austronesian         Philippine
sd               Sindhi                                          Arab  Indo-European        Indo-Aryan
yi               Yiddish                                         Hebr  Indo-European        Germanic
kaa_Latn         Karakalpak (Latin script)                       Latn  Turkic               Kipchak
sn               Shona                                           Latn  Niger-Congo          Bantu
co               Corsican                                        Latn  Indo-European        Romance
su               Sundanese                                       Latn  Austronesian         Sundanese
pap              Papiamento                                      Latn  Creole or pidgin     Iberian-based
ig               Igbo                                            Latn  Niger-Congo          Igboid
zu               Zulu                                            Latn  Niger-Congo          Bantu
xh               Xhosa                                           Latn  Niger-Congo          Bantu
sm               Samoan                                          Latn  Austronesian         Oceanic
ny               Chichewa                                        Latn  Niger-Congo          Bantu
yo               Yoruba                                          Latn  Niger-Congo          Defoid
cv               Chuvash                                         Cyrl  Turkic               Oghur
el_Latn          Greek (Latin script)                            Latn  Indo-European        Greek
kl               Kalaallisut                                     Latn  Eskimo-Aleut         Inuit
haw              Hawaiian                                        Latn  Austronesian         Oceanic
gsw              Swiss German                                    Latn  Indo-European        Germanic
tet              Tetum                                           Latn  Austronesian         Timoric
st               Sesotho                                         Latn  Niger-Congo          Bantu
lus              Mizo                                            Latn  Sino-Tibetan         Kuki-Chin
oc               Occitan                                         Latn  Indo-European        Romance
as               Assamese                                        Beng  Indo-European        Indo-Aryan
rm               Romansh                                         Latn  Indo-European        Romance
br               Breton                                          Latn  Indo-European        Celtic
sah              Yakut                                           Cyrl  Turkic               Siberian Turkic
hi_Latn          Hindi (Latin script)                            Latn  Indo-European        Indo-Aryan
se               Northern Sami                                   Latn  Uralic               Sami
cnh              Hakha Chin                                      Latn  Sino-Tibetan         Kuki-Chin
om               Oromo                                           Latn  Afro-Asiatic         Cushitic
ce               Chechen                                         Cyrl  Northeast Caucasian  Nakh
udm              Udmurt                                          Cyrl  Uralic               Permic
lg               Luganda                                         Latn  Niger-Congo          Bantu
os               Ossetian                                        Cyrl  Indo-European        Iranian
nv               Navajo                                          Latn  Na-Dene              Athabaskan
kha              Khasi                                           Latn  Austroasiatic        Khasian
ilo              Ilocano                                         Latn  Austronesian         Philippine
ctd_Latn         Tedim Chin                                      Latn  Sino-Tibetan         Kuki-Chin
vec              Venetian                                        Latn  Indo-European        Romance
hil              Hiligaynon                                      Latn  Austronesian         Philippine
tyv              Tuvan                                           Cyrl  Turkic               Siberian Turkic
iba              Iban                                            Latn  Austronesian         Malayic
ru_Latn          Russian (Latin script)                          Latn  Indo-European        Slavic
kbd              Kabardian                                       Cyrl  Northwest Caucasian  Circassian
ti               Tigrinya                                        Ethi  Afro-Asiatic         Semitic
sa               Sanskrit                                        Deva  Indo-European        Indo-Aryan
av               Avar                                            Cyrl  Northeast Caucasian  Avar-Andic
bo               Tibetan                                         Tibt  Sino-Tibetan         Tibetic
zza              Zazaki                                          Latn  Indo-European        Iranian
ber_Latn         Tamazight (Latin script)                        Latn  Afro-Asiatic         Berber
otq              Queretaro Otomi                                 Latn  Otomanguean          Otomian
te_Latn          Telugu (Latin script)                           Latn  Dravidian            South-Central Dravidian
bua              Buryat                                          Cyrl  Mongolic             Mongolic
ts               Tsonga                                          Latn  Niger-Congo          Bantu
cfm              Falam Chin                                      Latn  Sino-Tibetan         Kuki-Chin
tn               Tswana                                          Latn  Niger-Congo          Bantu
krc              Karachay-Balkar                                 Cyrl  Turkic               Kipchak
ak               Twi (Akan)                                      Latn  Niger-Congo          Kwa
meo              Kedah Malay                                     Latn  Austronesian         Malayic
chm              Meadow Mari                                     Cyrl  Uralic               Mari
to               Tongan                                          Latn  Austronesian         Oceanic
ee               Ewe                                             Latn  Niger-Congo          Kwa
nso              Northern Sotho (Sepedi)                         Latn  Niger-Congo          Bantu
ady              Adyghe                                          Cyrl  Northwest Caucasian  Circassian
rom              Romani                                          Latn  Indo-European        Indo-Aryan
bho              Bhojpuri                                        Deva  Indo-European        Indo-Aryan
ltg              Latgalian                                       Latn  Indo-European        Baltic
fj               Fijian                                          Latn  Austronesian         Oceanic
yua              Yucatec Maya                                    Latn  Mayan                Yucatecan
gn               Guarani                                         Latn  Tupian               Tupi-Guarani
az_RU            Azerbaijani (Russia)                            Cyrl  Turkic               Oghuz
ln               Lingala                                         Latn  Niger-Congo          Bantu
ada              Dangme                                          Latn  Niger-Congo          Kwa
myv              Erzya                                           Cyrl  Uralic               Mordvinic
bik              Central Bikol                                   Latn  Austronesian         Philippine
tlh              Klingon                                         Latn  Constructed          Constructed
kbp              Kabiye                                          Latn  Niger-Congo          Gur
war              Waray                                           Latn  Austronesian         Philippine
wa               Walloon                                         Latn  Indo-European        Romance
bew              Betawi                                          Latn  Austronesian         Malayic
rcf              Reunion Creole French                           Latn  Creole or pidgin     French-based
ta_Latn          Tamil (Latin script)                            Latn  Dravidian            South Dravidian
kac              Kachin (Jingpho)                                Latn  Sino-Tibetan         Jingpho
iu               Inuktitut                                       Cans  Eskimo-Aleut         Inuit
ay               Aymara                                          Latn  Aymaran              Aymaran
kum              Kumyk                                           Cyrl  Turkic               Kipchak
qu               Quechua                                         Latn  Quechuan             Quechuan
bgp              Eastern Balochi                                 Arab  Indo-European        Iranian
hif              Fiji Hindi                                      Latn  Indo-European        Indo-Aryan
kw               Cornish                                         Latn  Indo-European        Celtic
nan_Latn_TW      Min Nan Chinese (Latin script, Taiwan)          Latn  Sino-Tibetan         Sinitic
srn              Sranan Tongo                                    Latn  Creole or pidgin     English-based
tly_IR           Talysh (Iran)                                   Arab  Indo-European        Iranian
sg               Sango                                           Latn  Niger-Congo          Ubangian
gom              Goan Konkani                                    Deva  Indo-European        Indo-Aryan
ml_Latn          Malayalam (Latin script)                        Latn  Dravidian            South Dravidian
kj               Kuanyama                                        Latn  Niger-Congo          Bantu
ksd              Kuanua (Tolai)                                  Latn  Austronesian         Oceanic
dz               Dzongkha                                        Tibt  Sino-Tibetan         Tibetic
kv               Komi                                            Cyrl  Uralic               Permic
msi              Sabah Malay                                     Latn  Austronesian         Malayic
ve               Venda                                           Latn  Niger-Congo          Bantu
zap              Zapotec                                         Latn  Otomanguean          Zapotecan
zxx_xx_dtynoise  Noise (non-linguistic content; not a language)  Zyyy  None                 None
meu              Motu                                            Latn  Austronesian         Oceanic
iso              Isoko                                           Latn  Niger-Congo          Edoid
ium              Iu Mien                                         Latn  Hmong-Mien           Mienic
nhe              Eastern Huasteca Nahuatl                        Latn  Uto-Aztecan          Aztecan
tyz              Tay                                             Latn  Kra-Dai              Tai
hui              Huli                                            Latn  Trans-New Guinea     Engan
new              Newari                                          Deva  Sino-Tibetan         Newaric
mdf              Moksha                                          Cyrl  Uralic               Mordvinic
pag              Pangasinan                                      Latn  Austronesian         Philippine
gv               Manx                                            Latn  Indo-European        Celtic
gag              Gagauz                                          Latn  Turkic               Oghuz
ngu              Guerrero Nahuatl                                Latn  Uto-Aztecan          Aztecan
quc              K'iche'                                         Latn  Mayan                Quichean-Mamean
mam              Mam                                             Latn  Mayan                Quichean-Mamean
min              Minangkabau                                     Latn  Austronesian         Malayic
ho               Hiri Motu                                       Latn  Creole or pidgin     Motu-based
pon              Pohnpeian                                       Latn  Austronesian         Oceanic
mrj              Hill Mari                                       Cyrl  Uralic               Mari
lu               Luba-Katanga                                    Latn  Niger-Congo          Bantu
gom_Latn         Goan Konkani (Latin script)                     Latn  Indo-European        Indo-Aryan
alt              Southern Altai                                  Cyrl  Turkic               Siberian Turkic
nzi              Nzema                                           Latn  Niger-Congo          Kwa
tzo              Tzotzil                                         Latn  Mayan                Tzeltalan
bci              Baoule                                          Latn  Niger-Congo          Kwa
dtp              Kadazan Dusun                                   Latn  Austronesian         North Borneo
abt              Ambulas                                         Latn  Sepik                Ndu
bbc              Batak Toba                                      Latn  Austronesian         Batak
pck              Paite Chin                                      Latn  Sino-Tibetan         Kuki-Chin
mai              Maithili                                        Deva  Indo-European        Indo-Aryan
mps              Dadibi                                          Latn  Trans-New Guinea     Teberan
emp              Northern Embera                                 Latn  Chocoan              Chocoan
mgh              Makhuwa-Meetto                                  Latn  Niger-Congo          Bantu
tab              Tabasaran                                       Cyrl  Northeast Caucasian  Lezgic
crh              Crimean Tatar                                   Latn  Turkic               Kipchak
tbz              Ditammari                                       Latn  Niger-Congo          Gur
ss               Swati                                           Latn  Niger-Congo          Bantu
chk              Chuukese                                        Latn  Austronesian         Oceanic
bru              Eastern Bru                                     Latn  Austroasiatic        Katuic
nnb              Nande                                           Latn  Niger-Congo          Bantu
fon              Fon                                             Latn  Niger-Congo          Kwa
ppk              Uma                                             Latn  Austronesian         Celebic
tiv              Tiv                                             Latn  Niger-Congo          Tivoid
btx              Batak Karo                                      Latn  Austronesian         Batak
bg_Latn          Bulgarian (Latin script)                        Latn  Indo-European        Slavic
mbt              Matigsalug Manobo                               Latn  Austronesian         Philippine
ace              Acehnese                                        Latn  Austronesian         Chamic
tvl              Tuvaluan                                        Latn  Austronesian         Oceanic
dov              Dombe                                           Latn  Niger-Congo          Bantu
ach              Acholi                                          Latn  Nilo-Saharan         Nilotic
xal              Kalmyk                                          Cyrl  Mongolic             Mongolic
cuk              San Blas Kuna                                   Latn  Chibchan             Kuna
kos              Kosraean                                        Latn  Austronesian         Oceanic
crs              Seselwa Creole French                           Latn  Creole or pidgin     French-based
wo               Wolof                                           Latn  Niger-Congo          Atlantic
bts              Batak Simalungun                                Latn  Austronesian         Batak
ubu              Umbu-Ungu                                       Latn  Trans-New Guinea     Chimbu-Wahgi
gym              Ngabere                                         Latn  Chibchan             Guaymiic
ibb              Ibibio                                          Latn  Niger-Congo          Cross River
ape              Bukiyip                                         Latn  Torricelli           Arapesh
stq              Saterland Frisian                               Latn  Indo-European        Germanic
ang              Old English                                     Latn  Indo-European        Germanic
enq              Enga                                            Latn  Trans-New Guinea     Engan
tsg              Tausug                                          Latn  Austronesian         Philippine
shn              Shan                                            Mymr  Kra-Dai              Tai
kri              Krio                                            Latn  Creole or pidgin     English-based
kek              Q'eqchi'                                        Latn  Mayan                Quichean-Mamean
rmc              Carpathian Romani                               Latn  Indo-European        Indo-Aryan
acf              Saint Lucian Creole French                      Latn  Creole or pidgin     French-based
fip              Fipa                                            Latn  Niger-Congo          Bantu
syr              Syriac                                          Syrc  Afro-Asiatic         Semitic
qub              Huallaga Huanuco Quechua                        Latn  Quechuan             Quechuan
bm               Bambara                                         Latn  Niger-Congo          Mande
tzh              Tzeltal                                         Latn  Mayan                Tzeltalan
jiv              Shuar                                           Latn  Jivaroan             Jivaroan
kn_Latn          Kannada (Latin script)                          Latn  Dravidian            South Dravidian
kjh              Khakas                                          Cyrl  Turkic               Siberian Turkic
yap              Yapese                                          Latn  Austronesian         Oceanic
ban              Balinese                                        Latn  Austronesian         Bali-Sasak-Sumbawa
tuc              Mutu                                            Latn  Austronesian         Oceanic
tcy              Tulu                                            Knda  Dravidian            South Dravidian
cab              Garifuna                                        Latn  Arawakan             Caribbean Arawakan
cak              Kaqchikel                                       Latn  Mayan                Quichean-Mamean
din              Dinka                                           Latn  Nilo-Saharan         Nilotic
zh_Latn          Chinese (Latin script)                          Latn  Sino-Tibetan         Sinitic
arn              Mapudungun                                      Latn  Araucanian           Araucanian
lrc              Northern Luri                                   Arab  Indo-European        Iranian
rwo              Rawa                                            Latn  Trans-New Guinea     Finisterre-Huon
hus              Huastec                                         Latn  Mayan                Huastecan
bum              Bulu                                            Latn  Niger-Congo          Bantu
mak              Makasar                                         Latn  Austronesian         South Sulawesi
frp              Arpitan                                         Latn  Indo-European        Romance
seh              Sena                                            Latn  Niger-Congo          Bantu
twu              Termanu                                         Latn  Austronesian         Timoric
kmb              Kimbundu                                        Latn  Niger-Congo          Bantu
ksw              S'gaw Karen                                     Mymr  Sino-Tibetan         Karenic
sja              Epena                                           Latn  Chocoan              Chocoan
amu              Guerrero Amuzgo                                 Latn  Otomanguean          Amuzgoan
mad              Madurese                                        Latn  Austronesian         Madurese
quh              South Bolivian Quechua                          Latn  Quechuan             Quechuan
dyu              Dyula                                           Latn  Niger-Congo          Mande
toj              Tojolabal                                       Latn  Mayan                Q'anjob'alan
ch               Chamorro                                        Latn  Austronesian         Chamorro
sus              Susu                                            Latn  Niger-Congo          Mande
nog              Nogai                                           Cyrl  Turkic               Kipchak
jam              Jamaican Creole English                         Latn  Creole or pidgin     English-based
gui              Eastern Bolivian Guarani                        Latn  Tupian               Tupi-Guarani
nia              Nias                                            Latn  Austronesian         NW Sumatra-Barrier Islands
mas              Maasai                                          Latn  Nilo-Saharan         Nilotic
bzj              Belize Kriol English                            Latn  Creole or pidgin     English-based
mkn              Kupang Malay                                    Latn  Austronesian         Malayic
lhu              Lahu                                            Latn  Sino-Tibetan         Lolo-Burmese
ctu              Ch'ol                                           Latn  Mayan                Cholan
kg               Kongo                                           Latn  Niger-Congo          Bantu
inb              Inga                                            Latn  Quechuan             Quechuan
guh              Guahibo                                         Latn  Guahiban             Guahiban
rn               Kirundi                                         Latn  Niger-Congo          Bantu
bus              Bokobaru                                        Latn  Niger-Congo          Mande
mfe              Morisien                                        Latn  Creole or pidgin     French-based
sda              Toraja-Sa'dan                                   Latn  Austronesian         South Sulawesi
bi               Bislama                                         Latn  Creole or pidgin     English-based
cr_Latn          Cree (Latin script)                             Latn  Algic                Algonquian
gor              Gorontalo                                       Latn  Austronesian         Philippine
jac              Popti'                                          Latn  Mayan                Q'anjob'alan
chr              Cherokee                                        Cher  Iroquoian            Southern Iroquoian
mh               Marshallese                                     Latn  Austronesian         Oceanic
mni              Meitei (Manipuri)                               Beng  Sino-Tibetan         Meitei
wal              Wolaytta                                        Latn  Afro-Asiatic         Omotic
teo              Teso                                            Latn  Nilo-Saharan         Nilotic
gub              Guajajara                                       Latn  Tupian               Tupi-Guarani
qvi              Imbabura Highland Quichua                       Latn  Quechuan             Quechuan
tdx              Tandroy-Mahafaly Malagasy                       Latn  Austronesian         Barito
rki              Rakhine                                         Mymr  Sino-Tibetan         Lolo-Burmese
djk              Eastern Maroon Creole (Aukan)                   Latn  Creole or pidgin     English-based
nr               South Ndebele                                   Latn  Niger-Congo          Bantu
zne              Zande                                           Latn  Niger-Congo          Ubangian
izz              Izii                                            Latn  Niger-Congo          Igboid
noa              Woun Meu                                        Latn  Chocoan              Chocoan
bqc              Boko (Benin)                                    Latn  Niger-Congo          Mande
srm              Saramaccan                                      Latn  Creole or pidgin     English-based
niq              Nandi (Kalenjin)                                Latn  Nilo-Saharan         Nilotic
bas              Basaa                                           Latn  Niger-Congo          Bantu
dwr              Dawro                                           Latn  Afro-Asiatic         Omotic
guc              Wayuu                                           Latn  Arawakan             Northern Arawakan
jvn              Caribbean Javanese                              Latn  Austronesian         Javanese
hvn              Sabu                                            Latn  Austronesian         Sumba-Hawu
sxn              Sangir                                          Latn  Austronesian         Philippine
koi              Komi-Permyak                                    Cyrl  Uralic               Permic
alz              Alur                                            Latn  Nilo-Saharan         Nilotic
nyu              Nyungwe                                         Latn  Niger-Congo          Bantu
bn_Latn          Bengali (Latin script)                          Latn  Indo-European        Indo-Aryan
suz              Sunwar                                          Deva  Sino-Tibetan         Kiranti
pau              Palauan                                         Latn  Austronesian         Palauan
nij              Ngaju                                           Latn  Austronesian         Barito
sat_Latn         Santali (Latin script)                          Latn  Austroasiatic        Munda
gu_Latn          Gujarati (Latin script)                         Latn  Indo-European        Indo-Aryan
msm              Agusan Manobo                                   Latn  Austronesian         Philippine
maz              Central Mazahua                                 Latn  Otomanguean          Otomian
qxr              Canar Highland Quichua                          Latn  Quechuan             Quechuan
shp              Shipibo-Conibo                                  Latn  Panoan               Panoan
hne              Chhattisgarhi                                   Deva  Indo-European        Indo-Aryan
ktu              Kituba (DRC)                                    Latn  Creole or pidgin     Kongo-based
laj              Lango (Uganda)                                  Latn  Nilo-Saharan         Nilotic
pis              Pijin                                           Latn  Creole or pidgin     English-based
mag              Magahi                                          Deva  Indo-European        Indo-Aryan
gbm              Garhwali                                        Deva  Indo-European        Indo-Aryan
tzj              Tz'utujil                                       Latn  Mayan                Quichean-Mamean
oj               Ojibwe                                          Latn  Algic                Algonquian
ndc_ZW           Ndau (Zimbabwe)                                 Latn  Niger-Congo          Bantu
tks              Takestani                                       Arab  Indo-European        Iranian
awa              Awadhi                                          Deva  Indo-European        Indo-Aryan
gvl              Gulay                                           Latn  Nilo-Saharan         Central Sudanic
knj              Western Kanjobal (Akatek)                       Latn  Mayan                Q'anjob'alan
spp              Supyire Senoufo                                 Latn  Niger-Congo          Senufo
mqy              Manggarai                                       Latn  Austronesian         Central Malayo-Polynesian
tca              Ticuna                                          Latn  Ticuna (isolate)     Ticuna
cce              Chopi                                           Latn  Niger-Congo          Bantu
skr              Saraiki                                         Arab  Indo-European        Indo-Aryan
kmz_Latn         Khorasani Turkish (Latin script)                Latn  Turkic               Oghuz
dje              Zarma                                           Latn  Nilo-Saharan         Songhay
gof              Gofa                                            Latn  Afro-Asiatic         Omotic
agr              Aguaruna                                        Latn  Jivaroan             Jivaroan
qvz              Northern Pastaza Quichua                        Latn  Quechuan             Quechuan
adh              Adhola                                          Latn  Nilo-Saharan         Nilotic
quf              Lambayeque Quechua                              Latn  Quechuan             Quechuan
kjg              Khmu                                            Laoo  Austroasiatic        Khmuic
tsc              Tswa                                            Latn  Niger-Congo          Bantu
ber              Tamazight (Tifinagh)                            Tfng  Afro-Asiatic         Berber
ify              Keley-I Kallahan                                Latn  Austronesian         Philippine
cbk              Chavacano                                       Latn  Creole or pidgin     Iberian-based
quy              Ayacucho Quechua                                Latn  Quechuan             Quechuan
ahk              Akha                                            Latn  Sino-Tibetan         Lolo-Burmese
cac              Chuj                                            Latn  Mayan                Q'anjob'alan
akb              Batak Angkola                                   Latn  Austronesian         Batak
nut              Nung (Vietnam)                                  Latn  Kra-Dai              Tai
ffm              Maasina Fulfulde                                Latn  Niger-Congo          Atlantic
taj              Eastern Tamang                                  Deva  Sino-Tibetan         Tamangic
ms_Arab          Malay (Jawi script)                             Arab  Austronesian         Malayic
brx              Bodo                                            Deva  Sino-Tibetan         Bodo-Garo
ann              Obolo                                           Latn  Niger-Congo          Cross River
qup              Southern Pastaza Quechua                        Latn  Quechuan             Quechuan
ms_Arab_BN       Malay (Jawi script, Brunei)                     Arab  Austronesian         Malayic
miq              Miskito                                         Latn  Misumalpan           Misumalpan
msb              Masbatenyo                                      Latn  Austronesian         Philippine
bim              Bimoba                                          Latn  Niger-Congo          Gur
raj              Rajasthani                                      Deva  Indo-European        Indo-Aryan
kwi              Awa-Cuaiquer                                    Latn  Barbacoan            Barbacoan
tll              Tetela                                          Latn  Niger-Congo          Bantu
trp              Kokborok                                        Latn  Sino-Tibetan         Bodo-Garo
smt              Simte                                           Latn  Sino-Tibetan         Kuki-Chin
mrw              Maranao                                         Latn  Austronesian         Philippine
dln              Darlong                                         Latn  Sino-Tibetan         Kuki-Chin
qvc              Cajamarca Quechua                               Latn  Quechuan             Quechuan
doi              Dogri                                           Deva  Indo-European        Indo-Aryan
ff               Fulah                                           Latn  Niger-Congo          Atlantic
"""

# Entries whose script or classification is a judgement call (reason in the value).
UNCERTAIN: dict[str, str] = {
    "zh": "the release mixes simplified and traditional characters: script given as Hani (Han, either form)",
    "sr": "Serbian web text is written in both Cyrillic and Latin; Cyrl assumed dominant",
    "az_RU": "Azerbaijani as written in Russia (Dagestan); Cyrillic assumed from the region tag",
    "bgp": "Eastern Balochi: Arabic script assumed (the usual script in Pakistan)",
    "tly_IR": "Talysh of Iran: Perso-Arabic script assumed from the region tag",
    "mni": "Meitei is written in Bengali script and in Meetei Mayek (Mtei); Beng assumed dominant on the web",
    "kjg": "Khmu is written in Lao script and in Latin; Laoo assumed",
    "suz": "Sunwar: Devanagari assumed (a native Kiranti script also exists)",
    "trp": "Kokborok is written in Latin and Bengali scripts; Latn assumed",
    "oj": "Ojibwe: Latin orthography assumed (syllabics are used in parts of Canada)",
    "sg": "Sango: classified by its Ngbandi (Ubangian) base although often called a creole",
    "ho": "Hiri Motu: a Motu-based pidgin, grouped under 'Creole or pidgin'",
    "ubu": "Umbu-Ungu (Kaugel): Trans-New Guinea assumed, genus Chimbu-Wahgi uncertain",
    "yap": "Yapese: Oceanic membership is debated",
    "mqy": "Manggarai: genus given only as Central Malayo-Polynesian",
    "hui": "Huli: Engan, counted in Trans-New Guinea following Ross",
    "rwo": "Rawa: genus Finisterre-Huon uncertain",
    "zxx_xx_dtynoise": "not a language: the release's noise bucket; script Zyyy (common), family None",
}

# Other spellings that name a MADLAD language. Keys are lower case with "_" separators.
ALIASES: dict[str, str] = {
    "pt_br": "pt", "pt_pt": "pt", "zh_cn": "zh", "zh_tw": "zh", "zh_hk": "zh", "zh_sg": "zh",
    "zh_hans": "zh", "zh_hant": "zh", "cmn": "zh", "cmn_hans": "zh", "zho": "zh",
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro", "nb": "no", "nob": "no",
    "tl": "fil", "tgl": "fil", "kmr": "ku", "eng": "en", "fra": "fr", "deu": "de", "spa": "es",
    "por": "pt", "rus": "ru", "jpn": "ja", "kor": "ko", "ara": "ar", "arb": "ar",
}


def _parse_table(text: str) -> dict[str, Language]:
    languages: dict[str, Language] = {}
    for line in text.strip().splitlines():
        fields = re.split(r"\s{2,}", line.strip())
        if len(fields) != 5:
            raise ValueError(f"languages table: malformed line {line!r}")
        lang = Language(*fields)
        if lang.code in languages:
            raise ValueError(f"languages table: duplicate code {lang.code!r}")
        languages[lang.code] = lang
    return languages


LANGUAGES: dict[str, Language] = _parse_table(_TABLE)
_BY_LOWER: dict[str, str] = {code.lower(): code for code in LANGUAGES}
_REGION = re.compile(r"^(?:[A-Za-z]{2}|[0-9]{3})$")
_SCRIPT = re.compile(r"^[A-Za-z]{4}$")


def _lookup(key: str) -> str | None:
    key = key.lower()
    if key in _BY_LOWER:
        return _BY_LOWER[key]
    if key in ALIASES:
        return ALIASES[key]
    return None


def nearest_codes(code: str, n: int = 5) -> list[str]:
    """Up to `n` valid codes closest to `code`, by spelling of the code or the English name."""
    key = code.strip().replace("-", "_").lower()
    scores: dict[str, float] = {}
    base = _lookup(key.split("_")[0]) if "_" in key else None
    if base is not None:  # "sr_Latn" -> "sr" first
        scores[base] = 2.0
    for lower, real in _BY_LOWER.items():
        for candidate in (lower, LANGUAGES[real].name.lower()):
            ratio = difflib.SequenceMatcher(None, key, candidate).ratio()
            if ratio >= 0.5 and ratio > scores.get(real, 0.0):
                scores[real] = ratio
    return sorted(scores, key=lambda c: (-scores[c], c))[:n]


def resolve_language(code: str) -> Language:
    """Returns the MADLAD language `code` names.

    Accepted spellings, in order: the release code itself (`kaa_Latn`); any case and `-` or `_`
    separators (`KAA-latn`); an alias from `ALIASES` (`pt_BR` → pt, `iw` → he, `zh-Hant` → zh);
    a code followed by a region tag that the release does not distinguish (`en_US` → en,
    `es-419` → es); a code followed by the script it is written in anyway (`sr_Cyrl` → sr).

    Raises:
      ValueError: "unknown language 'xx'; nearest valid codes: ..." when nothing matches.
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"unknown language {code!r}: expected a non-empty language code string")
    if code in LANGUAGES:
        return LANGUAGES[code]
    key = code.strip().replace("-", "_")
    found = _lookup(key)
    parts = key.split("_")
    while found is None and len(parts) > 1:
        tail = parts[-1]
        base = _lookup("_".join(parts[:-1]))
        if base is not None and _SCRIPT.match(tail):
            if LANGUAGES[base].script.lower() == tail.lower() or base == "zh" and tail.lower() in (
                "hans", "hant"
            ):
                found = base
            break  # a different script is a different MADLAD entry (or none): do not guess
        if not _REGION.match(tail):
            break
        parts = parts[:-1]
        found = _lookup("_".join(parts))
    if found is None:
        near = nearest_codes(code)
        hint = ", ".join(near) if near else "none close; see atlas_t5x.languages.LANGUAGES"
        raise ValueError(f"unknown language {code!r}; nearest valid codes: {hint}")
    return LANGUAGES[found]


def require_metadata(codes: Iterable[str]) -> dict[str, Language]:
    """Maps every code to its `Language`, or raises one ValueError naming all unknown codes.

    Used by analyses that need script and family for each language (e.g. the transfer matrix).
    """
    known: dict[str, Language] = {}
    unknown: list[str] = []
    for code in codes:
        try:
            known[code] = resolve_language(code)
        except ValueError:
            unknown.append(code)
    if unknown:
        detail = "; ".join(
            f"{c!r} (nearest: {', '.join(nearest_codes(c)) or 'none'})" for c in unknown
        )
        raise ValueError(
            f"no script/family metadata for {len(unknown)} language(s): {detail}"
        )
    return known


def same_script(a: str, b: str) -> bool:
    """True when languages `a` and `b` are written in the same ISO 15924 script."""
    return resolve_language(a).script == resolve_language(b).script


def same_family(a: str, b: str) -> bool:
    """True when languages `a` and `b` belong to the same top-level family."""
    return resolve_language(a).family == resolve_language(b).family
