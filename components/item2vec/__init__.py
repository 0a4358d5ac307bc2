"""item2vec: pretrained item vectors (gensim word2vec over users' histories) and user vectors.

`pretrain.pretrain` trains and writes the vectors. What sample building and the recall
service share lives in `components.common`: `user_vectors.user_vector` turns a history into
a user vector; `vectors` reads and writes word2vec (text/binary) and `.npy` files;
`interactions` reads and checks logs.
"""
